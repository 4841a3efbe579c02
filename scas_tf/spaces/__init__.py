"""Search spaces as encodings: sample, to text, from text, validate."""


def state_name(index):
    """A cell's state as figures label it: the cell inputs (the outputs of the cells two back
    and one back), then the intermediate nodes by index (DARTS and ENAS micro number them alike)."""
    return ("c[k-2]", "c[k-1]")[index] if index < 2 else f"node {index}"
