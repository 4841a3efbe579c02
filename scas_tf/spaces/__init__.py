"""Search spaces as encodings: sample, to text, from text, validate, controller decisions."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Decision:
    """One step of an architecture's decision sequence, as a controller sees it.

    kind: "op" (categorical over `size` ops), "input" (categorical over the `size` anchors of
    the current group) or "skips" (`size` independent bits over the group's anchors).
    new_group: > 0 starts a new anchor group seeded with this many anchors before the decision.
    add_anchor: the controller's output at this decision becomes an anchor.
    op_group: "op" decisions of one group share their logits head and embedding.
    """
    kind: str
    size: int
    new_group: int = 0
    add_anchor: bool = False
    op_group: str = ""
