"""DARTS search space (Liu et al. 2018): the genotype encoding and its derivation from alpha.

A cell has two inputs (index 0: the cell two back, 1: the previous cell) and NUM_NODES
intermediate nodes; node i (index i + 2) sums two ops, each on an earlier state. The cell's
output concatenates the `concat` states. Text is the reference's `Genotype(...)` fields:

    normal=[(sep_conv_3x3,0),(sep_conv_3x3,1),...], normal_concat=[2,3,4,5],
    reduce=[(max_pool_3x3,0),...], reduce_concat=[2,3,4,5]

(Python's repr of the reference's namedtuple, quotes and all, parses too), or the name of a
published genotype (DARTS_V1, DARTS_V2).
"""
import dataclasses
import re

import numpy as np

from scas_tf.errors import ScasError
from scas_tf.spaces import state_name

PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
NUM_NODES = 4
NUM_EDGES = sum(range(2, 2 + NUM_NODES))  # node i has i + 2 incoming edges: 14
CELL_TYPES = ("normal", "reduce")


def edges():
    """(node, input state) of every edge of the mixed cell, in alpha's row order."""
    return [(node, state) for node in range(NUM_NODES) for state in range(node + 2)]


def edge_labels():
    """`node <- input` of every edge, in alpha's row order (nodes numbered as states, from 2)."""
    return [f"node {node + 2} <- {state_name(state)}" for node, state in edges()]


@dataclasses.dataclass(frozen=True)
class Genotype:
    normal: tuple  # ((op, input state), ...) two per node
    normal_concat: tuple
    reduce: tuple
    reduce_concat: tuple

    def __post_init__(self):
        for cell_type in CELL_TYPES:
            check_cell(cell_type, getattr(self, cell_type), getattr(self, f"{cell_type}_concat"))

    def to_text(self):
        def ops(cell):
            return "[" + ",".join(f"({op},{state})" for op, state in cell) + "]"

        def states(concat):
            return "[" + ",".join(str(s) for s in concat) + "]"

        return ", ".join(f"{t}={ops(getattr(self, t))}, {t}_concat={states(getattr(self, t + '_concat'))}"
                         for t in CELL_TYPES)

    @classmethod
    def from_text(cls, text):
        text = text.strip()
        if text in PUBLISHED:
            return PUBLISHED[text]
        body = re.sub(r"[\s'\"]", "", text)
        body = re.sub(r"^Genotype\((.*)\)$", r"\1", body)
        fields = dict(re.findall(r"(normal_concat|reduce_concat|normal|reduce)=(\[[^=]*\])(?:,|$)", body))
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in fields]
        if missing or len(",".join(f"{k}={v}" for k, v in fields.items())) != len(body):
            raise ScasError(f"malformed DARTS genotype {text!r}: expected normal=[(op,input),...], "
                            "normal_concat=[...], reduce=[...], reduce_concat=[...]"
                            + (f" (missing {', '.join(missing)})" if missing else ""))
        return cls(**{name: parse_cell(text, fields[name]) if not name.endswith("concat")
                      else parse_states(text, fields[name]) for name in fields})

    def cell(self, cell_type):
        return getattr(self, cell_type), getattr(self, f"{cell_type}_concat")


def malformed(text, reason):
    return ScasError(f"malformed DARTS genotype {text!r}: {reason}")


def parse_cell(text, field):
    pairs = re.findall(r"\(([A-Za-z0-9_]+),(-?\d+)\)", field)
    if "[" + ",".join(f"({op},{state})" for op, state in pairs) + "]" != field:
        raise malformed(text, f"cannot read {field!r} as a list of (op, input) pairs")
    return tuple((op, int(state)) for op, state in pairs)


def parse_states(text, field):
    if not re.fullmatch(r"\[(\d+(,\d+)*)?\]", field):
        raise malformed(text, f"cannot read {field!r} as a list of node indices")
    return tuple(int(s) for s in field[1:-1].split(",") if s)


def check_cell(cell_type, cell, concat):
    """Each node has two ops on earlier states; concat lists distinct, existing states."""
    def fail(reason):
        return ScasError(f"malformed DARTS genotype: {cell_type} cell: {reason}")

    if len(cell) != 2 * NUM_NODES:
        raise fail(f"needs {2 * NUM_NODES} (op, input) pairs (two per node), got {len(cell)}")
    for k, (op, state) in enumerate(cell):
        node = k // 2
        if op not in PRIMITIVES or op == "none":
            raise fail(f"unknown op {op!r}; ops are {', '.join(PRIMITIVES[1:])}")
        if not 0 <= state < node + 2:
            raise fail(f"node {node + 2} cannot take input {state} (only states 0..{node + 1} exist)")
    if not concat or len(set(concat)) != len(concat) or not all(0 <= s < NUM_NODES + 2 for s in concat):
        raise fail(f"concat {list(concat)} must list distinct states among 0..{NUM_NODES + 1}")


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def derive_cell(weights):
    """The reference's `_parse`: per node, the two incoming edges whose strongest non-`none`
    op weighs most, each with that op (argmax excluding `none`)."""
    weights = np.asarray(weights)
    if weights.shape != (NUM_EDGES, len(PRIMITIVES)):
        raise ValueError(f"cell weights must be {NUM_EDGES}x{len(PRIMITIVES)}, got {weights.shape}")
    none = PRIMITIVES.index("none")
    real = np.delete(weights, none, axis=1)
    real_ops = [op for op in PRIMITIVES if op != "none"]
    cell, start = [], 0
    for node in range(NUM_NODES):
        rows = real[start:start + node + 2]
        # A stable sort keeps the reference's tie order (earlier input first).
        strongest = sorted(range(node + 2), key=lambda state: -rows[state].max())[:2]
        cell += [(real_ops[int(np.argmax(rows[state]))], state) for state in strongest]
        start += node + 2
    return tuple(cell)


def derive(alpha_normal, alpha_reduce):
    """The genotype of a search: derive_cell on softmax(alpha) of each cell type, concatenating
    every intermediate node."""
    concat = tuple(range(2, NUM_NODES + 2))
    return Genotype(derive_cell(softmax(np.asarray(alpha_normal))), concat,
                    derive_cell(softmax(np.asarray(alpha_reduce))), concat)


def _published(normal, reduce):
    concat = tuple(range(2, NUM_NODES + 2))
    return Genotype(tuple(normal), concat, tuple(reduce), concat)


# quark0/darts cnn/genotypes.py.
PUBLISHED = {
    "DARTS_V1": _published(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)]),
    "DARTS_V2": _published(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]),
}
