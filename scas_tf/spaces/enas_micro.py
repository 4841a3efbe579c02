"""ENAS micro search space (Pham et al. 2018): the encoding of a normal and a reduction cell.

A cell has two inputs (ids 0 and 1: the outputs of the two previous cells) and NUM_NODES nodes
(ids 2..6). Node k adds op1(input idx1) and op2(input idx2), each idx < k + 2, and the cell's
output concatenates every id that no node uses as an input, unused cell inputs included. A
cell is 20 integers, `idx1 op1 idx2 op2` per node; the text form is the normal cell then the
reduction cell, as the reference's `fixed_arc` (and its controller's `arc_seq`), so published
architectures can be read. (The controller decides a node's two inputs before its two ops.)
"""
import dataclasses
import re

import numpy as np

from scas_tf.errors import ScasError
from scas_tf.spaces import state_name

OPS = ("sep3x3", "sep5x5", "avg3x3", "max3x3", "identity")
NUM_NODES = 5
CELL_LENGTH = 4 * NUM_NODES
CELLS = ("normal", "reduce")


def malformed(reason):
    return ScasError(f"malformed ENAS micro architecture: {reason}")


def unused_nodes(cell):
    """Ids (cell inputs 0, 1 included) that no node takes as input: the cell's output."""
    used = set(cell[0::2])  # idx1 and idx2 sit at the even positions of every node's quadruple
    return [node for node in range(NUM_NODES + 2) if node not in used]


def choice_sizes():
    """How many values each of a cell's CELL_LENGTH integers can take: node k (ids from 2)
    reads one of the k ids before it, and picks one of the OPS."""
    return [size for node in range(2, NUM_NODES + 2) for size in (node, len(OPS), node, len(OPS))]


@dataclasses.dataclass(frozen=True)
class MicroArch:
    normal: tuple  # CELL_LENGTH ints: idx1 op1 idx2 op2 per node
    reduce: tuple

    def __post_init__(self):
        # Accept lists and numpy integers, but store plain int tuples so equal architectures
        # compare and hash equal; a float would hide a caller's bug, so it is rejected.
        for name in CELLS:
            values = getattr(self, name)
            if not all(isinstance(v, (int, np.integer)) for v in values):
                raise malformed(f"{name} cell holds non-integers: {list(values)}")
            object.__setattr__(self, name, tuple(int(v) for v in values))
        self.validate()

    @property
    def actions(self):
        return self.normal + self.reduce

    @classmethod
    def from_actions(cls, actions):
        values = np.asarray(actions).reshape(-1).tolist()
        if len(values) != 2 * CELL_LENGTH:
            raise malformed(f"expected {2 * CELL_LENGTH} integers (normal cell, then reduction "
                            f"cell), got {len(values)}")
        return cls(tuple(values[:CELL_LENGTH]), tuple(values[CELL_LENGTH:]))

    @classmethod
    def from_text(cls, text):
        tokens = str(text).replace("|", " ").split()
        bad = [t for t in tokens if not re.fullmatch(r"-?[0-9]+", t)]
        if bad:
            raise malformed(f"{bad[0]!r} is not an integer")
        return cls.from_actions([int(t) for t in tokens])

    def to_text(self):
        return " ".join(str(v) for v in self.actions)

    def op_names(self):
        """The ops chosen, by cell type."""
        return {name: [OPS[op] for op in getattr(self, name)[1::2]] for name in CELLS}

    @classmethod
    def sample(cls, rng):
        """Uniform over the space: every integer independently uniform over its choices."""
        return cls.from_actions([int(rng.integers(size)) for size in choice_sizes() * len(CELLS)])

    def validate(self):
        for name in CELLS:
            if len(getattr(self, name)) != CELL_LENGTH:
                raise malformed(f"{name} cell needs {CELL_LENGTH} integers, got {len(getattr(self, name))}")
        for position, (value, size) in enumerate(zip(self.actions, choice_sizes() * len(CELLS))):
            if not 0 <= value < size:
                cell = CELLS[position // CELL_LENGTH]
                node = position % CELL_LENGTH // 4 + 2
                what = "op" if position % 2 else "input"
                raise malformed(f"{cell} cell node {node}: {what} {value} is not in 0..{size - 1}")


def policy_tables(probabilities):
    """A policy's probabilities (a vector per decision, in decision order) as heat-map tables
    {name: (caption, row labels, column labels, values)}: per cell type, "<cell>_ops" (each
    node's two ops) and "<cell>_inputs" (their inputs; NaN where a node cannot read that state)."""
    tables = {}
    rows = [f"node {node} ({slot})" for node in range(2, NUM_NODES + 2) for slot in ("1st", "2nd")]
    for index, cell in enumerate(CELLS):
        decisions = [np.asarray(p) for p in probabilities[index * CELL_LENGTH:(index + 1) * CELL_LENGTH]]
        inputs = np.full((len(rows), NUM_NODES + 1), np.nan)  # the last node is nobody's input
        for row, p in enumerate(decisions[0::2]):  # a node's quadruple: input, op, input, op
            inputs[row, :len(p)] = p
        tables[f"{cell}_ops"] = (f"{cell} cell, each node's two ops", rows, OPS, np.stack(decisions[1::2]))
        tables[f"{cell}_inputs"] = (f"{cell} cell, the inputs of each node's two ops", rows,
                                    [state_name(s) for s in range(NUM_NODES + 1)], inputs)
    return tables
