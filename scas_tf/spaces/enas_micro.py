"""ENAS micro search space (Pham et al. 2018): the encoding of a normal and a reduction cell.

A cell has two inputs (ids 0 and 1: the outputs of the two previous cells) and NUM_NODES nodes
(ids 2..6). Node k adds op1(input idx1) and op2(input idx2), each idx < k + 2, and the cell's
output concatenates every id that no node uses as an input, unused cell inputs included. A
cell is 20 integers, `idx1 op1 idx2 op2` per node; the text form is the normal cell then the
reduction cell, as the reference's `fixed_arc`, so published architectures can be read. The
controller makes its 40 decisions in exactly that order.
"""
import dataclasses
import re

import numpy as np

from scas_tf.errors import ScasError
from scas_tf.spaces import Decision

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


def controller_decisions():
    """Per cell and node: input, op, input, op; a cell's anchors start as its two inputs and
    each node's last decision adds the node as an anchor for later nodes' input choices."""
    decisions = []
    for cell in CELLS:
        for node in range(NUM_NODES):
            for slot in (0, 1):
                first_of_cell = node == 0 and slot == 0
                decisions.append(Decision("input", node + 2, new_group=2 if first_of_cell else 0))
                decisions.append(Decision("op", len(OPS), op_group=cell, add_anchor=slot == 1))
    return decisions


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

    @classmethod
    def sample(cls, rng):
        """Uniform over the space: every decision independently uniform over its choices."""
        return cls.from_actions([int(rng.integers(d.size)) for d in controller_decisions()])

    def validate(self):
        for name in CELLS:
            if len(getattr(self, name)) != CELL_LENGTH:
                raise malformed(f"{name} cell needs {CELL_LENGTH} integers, got {len(getattr(self, name))}")
        for position, (value, decision) in enumerate(zip(self.actions, controller_decisions())):
            if not 0 <= value < decision.size:
                cell = CELLS[position // CELL_LENGTH]
                node = position % CELL_LENGTH // 4 + 2
                what = "input" if decision.kind == "input" else "op"
                raise malformed(f"{cell} cell node {node}: {what} {value} is not in "
                                f"0..{decision.size - 1}")
