"""ENAS macro search space: the encoding (sample, text, parse, validate).

A network is a stem 3x3 convolution followed by L layers. As in the reference
(general_child.py), the stored outputs before layer i are [stem, layer 0, ..., layer i-1];
layer i applies one of six ops to the last of them and has i skip bits, bit j adding stored
output j: bit 0 is the *stem*, bit j > 0 is layer j-1, and the immediate predecessor (the op's
input) is never a skip. The text form is the reference's: per layer i, `op skip_0 ..
skip_{i-1}`, all integers separated by spaces (separators `|` allowed), so published ENAS
architectures can be read.
"""
import dataclasses
import math

import numpy as np

from scas_tf.errors import ScasError

OPS = ("conv3x3", "sep3x3", "conv5x5", "sep5x5", "avgpool3x3", "maxpool3x3")


def pool_layers(num_layers):
    """Layers after which every stored output (stem included) is spatially halved; the
    reference's `pool_distance = L // 3` puts them at L//3 - 1 and 2*(L//3) - 1."""
    distance = num_layers // 3
    return (distance - 1, 2 * distance - 1)


def num_layers_for_length(length):
    """Inverts length = L(L+1)/2, or None when no L fits."""
    num_layers = int((math.isqrt(8 * length + 1) - 1) // 2)
    return num_layers if num_layers * (num_layers + 1) // 2 == length and num_layers > 0 else None


def layer_decisions(sequence, num_layers):
    """Per layer, (its op's entry, its skip bits' entries) of a sequence in the controller's
    decision order (an architecture's integers, or a value per decision)."""
    starts = [layer * (layer + 1) // 2 for layer in range(num_layers)]
    return [(sequence[start], sequence[start + 1:start + 1 + layer]) for layer, start in enumerate(starts)]


@dataclasses.dataclass(frozen=True)
class MacroArch:
    ops: tuple  # per layer, an index into OPS
    skips: tuple  # per layer i, i bits: bit 0 adds the stem, bit j > 0 the output of layer j - 1

    @property
    def num_layers(self):
        return len(self.ops)

    @property
    def actions(self):
        """The flat integer sequence, in the controller's decision order (= the text order)."""
        return tuple(v for op, bits in zip(self.ops, self.skips) for v in (op, *bits))

    @classmethod
    def from_actions(cls, actions):
        actions = [int(a) for a in actions]
        num_layers = num_layers_for_length(len(actions))
        if num_layers is None:
            raise ScasError(f"malformed ENAS macro architecture: {len(actions)} integers is not "
                            "L(L+1)/2 for any number of layers L")
        decisions = layer_decisions(actions, num_layers)
        arch = cls(tuple(op for op, _ in decisions), tuple(tuple(bits) for _, bits in decisions))
        arch.validate()
        return arch

    @classmethod
    def from_text(cls, text):
        tokens = text.replace("|", " ").split()
        try:
            return cls.from_actions(int(t) for t in tokens)
        except ValueError:
            bad = next(t for t in tokens if not t.lstrip("-").isdigit())
            raise ScasError(f"malformed ENAS macro architecture: {bad!r} is not an integer") from None

    def to_text(self):
        return " ".join(str(a) for a in self.actions)

    def validate(self):
        for layer, (op, bits) in enumerate(zip(self.ops, self.skips)):
            if not 0 <= op < len(OPS):
                raise ScasError(f"malformed ENAS macro architecture: layer {layer} op {op} "
                                f"is not in 0..{len(OPS) - 1}")
            if len(bits) != layer or any(b not in (0, 1) for b in bits):
                raise ScasError(f"malformed ENAS macro architecture: layer {layer} needs {layer} "
                                f"skip bits of 0 or 1, got {list(bits)}")

    @classmethod
    def sample(cls, rng, num_layers, skip_rate=0.4):
        ops = tuple(int(o) for o in rng.integers(0, len(OPS), num_layers))
        skips = tuple(tuple(int(b) for b in rng.random(i) < skip_rate) for i in range(num_layers))
        return cls(ops, skips)

    def op_names(self):
        """The ops chosen, by group (one group: the layers)."""
        return {"layers": [OPS[op] for op in self.ops]}

    def skip_rate(self):
        bits = [b for layer_bits in self.skips for b in layer_bits]
        return float(np.mean(bits)) if bits else 0.0


def policy_tables(probabilities):
    """A policy's probabilities (a vector per decision, in decision order) as heat-map tables
    {name: (caption, row labels, column labels, values)}: "ops", each layer's op; "skips",
    each skip bit's probability of being on (rows: layers 1.., columns: the stored outputs
    they may add; NaN where a layer has no such bit), a layer's expected skip rate in its label."""
    num_layers = num_layers_for_length(len(probabilities))
    decisions = layer_decisions([np.asarray(p) for p in probabilities], num_layers)
    skips = np.full((num_layers - 1, num_layers - 1), np.nan)
    for layer, (_, bits) in enumerate(decisions[1:], start=1):
        skips[layer - 1, :layer] = [p[1] for p in bits]
    sources = ["stem"] + [f"layer {j}" for j in range(num_layers - 2)]
    return {"ops": ("each layer's op", [f"layer {i}" for i in range(num_layers)], OPS,
                    np.stack([op for op, _ in decisions])),
            "skips": ("each layer's skip connection from each earlier output",
                      [f"layer {i} (rate {np.nanmean(skips[i - 1]):.2f})" for i in range(1, num_layers)],
                      sources, skips)}
