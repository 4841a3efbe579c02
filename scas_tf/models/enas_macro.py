"""ENAS macro search space: the fixed-architecture builder and the shared-weight supernet.

Both follow the reference's layout (general_child.py): the stored outputs before layer i are
[stem, layer 0, ..., layer i-1]; layer i applies its op to the last one and its skip bit j
adds stored output j (bit 0: the stem). At each pool layer every stored output, the stem
included, is factorized-reduced. Both build every candidate op from the same functional blocks
(`branch`), so a searched op and its final-training counterpart are the same layers. Separable
ops are real depthwise + 1x1 convolutions and pool ops work (the reference's fixed mode builds
sep ops as full convolutions and crashes on pool ops).
"""
import math

import tensorflow as tf
import tf_keras as keras

from scas_tf.models import layers
from scas_tf.spaces.enas_macro import OPS, MacroArch, pool_layers


def branch(x, op, filters):
    """Candidate op `op` of a layer: 1x1 conv-BN-ReLU, then a kxk (separable) conv-BN-ReLU or
    a 3x3 stride-1 pooling."""
    name = OPS[op]
    x = layers.conv_bn_relu(x, filters, 1)
    if name.startswith("conv"):
        return layers.conv_bn_relu(x, filters, int(name[-1]))
    if name.startswith("sep"):
        return layers.separable_conv_bn_relu(x, filters, int(name[-1]))
    pool = keras.layers.AveragePooling2D if name.startswith("avg") else keras.layers.MaxPooling2D
    return pool(3, strides=1, padding="same")(x)


def stem(inputs, filters):
    return layers.batch_norm(layers.conv(inputs, filters, 3), name="stem")


def head(x, num_classes, dropout):
    """The reference's: global average pooling of the last layer's BN output (no ReLU),
    dropout, dense."""
    return layers.classifier(x, num_classes, dropout)


def auxiliary_layer(num_layers):
    """The layer after which the auxiliary head reads (as ENAS micro: one after the last pool)."""
    return pool_layers(num_layers)[1] + 1


def build_macro_model(arch, info, filters=36, dropout=0.1, auxiliary=False, drop_path=0.0):
    """The fixed network of `arch` (a MacroArch or its text), as the reference's final training
    builds it: the op's output and the selected stored outputs are concatenated, then ReLU,
    1x1 conv and BN; filters double at each pool layer. `auxiliary` adds an auxiliary head
    after layer `auxiliary_layer` (the model then outputs [logits, auxiliary logits]);
    `drop_path` adds DropPath on each op's output, deeper layers dropping more (the reference's
    macro space has neither; they are here for the final-training flags)."""
    if not isinstance(arch, MacroArch):
        arch = MacroArch.from_text(arch)
    arch.validate()
    inputs = keras.Input(info.image_shape)
    stored = [stem(inputs, filters)]
    aux_logits = None
    for i, (op, bits) in enumerate(zip(arch.ops, arch.skips)):
        out = branch(stored[-1], op, filters)
        if drop_path:
            out = layers.DropPath((i + 1) / arch.num_layers)(out)
        if i > 0:
            parts = [o for o, b in zip(stored, bits) if b] + [out]
            out = keras.layers.Concatenate(name=f"skips_{i}")(parts) if len(parts) > 1 else out
            out = layers.batch_norm(layers.conv(keras.layers.ReLU()(out), filters, 1))
        stored.append(out)
        if i in pool_layers(arch.num_layers):
            filters *= 2
            stored = [layers.factorized_reduction(o, filters, name=f"reduce_{i}_from_{j}")
                      for j, o in enumerate(stored)]
        if auxiliary and i == auxiliary_layer(arch.num_layers):
            aux_logits = layers.auxiliary_classifier(stored[-1], info.num_classes)
    logits = head(stored[-1], info.num_classes, dropout)
    return keras.Model(inputs, [logits, aux_logits] if auxiliary else logits, name="enas_macro")


class MacroSupernet(keras.Model):
    """Every layer holds all six candidate ops; an architecture (an int32 tensor of
    `MacroArch.actions`) picks one per layer with tf.switch_case and gates the skip
    connections, so one traced function serves every architecture. As in the reference's
    search mode, a layer's selected skips are summed with its op's output and
    batch-normalised (layer 0 has none), and the number of filters stays constant."""

    def __init__(self, info, num_layers=12, filters=36, dropout=0.1):
        super().__init__(name="enas_macro_supernet")
        self.num_layers = num_layers
        height, width = info.image_shape[:2]
        self.stem = layers.submodel(info.image_shape, lambda x: stem(x, filters))
        self.branches, self.skip_norms, self.reductions = [], [], []
        for i in range(num_layers):
            shape = (height, width, filters)
            self.branches.append([layers.submodel(shape, lambda x, op=op: branch(x, op, filters))
                                  for op in range(len(OPS))])
            self.skip_norms.append(layers.submodel(shape, layers.batch_norm) if i > 0 else None)
            # At a pool layer each of the i + 2 stored outputs gets its own reduction.
            pooling = i in pool_layers(num_layers)
            self.reductions.append([layers.submodel(shape, lambda x: layers.factorized_reduction(x, filters))
                                    for _ in range(i + 2) if pooling])
            if pooling:
                height, width = math.ceil(height / 2), math.ceil(width / 2)
        self.head = layers.submodel((height, width, filters), lambda x: head(x, info.num_classes, dropout))

    def call(self, images, arch, training=False):
        return self.head(self.stored_outputs(images, arch, training)[-1], training=training)

    def stored_outputs(self, images, arch, training=False):
        """The stored outputs after the last layer: [stem, layer 0, ..., layer L-1], as reduced
        at the pool layers."""
        ops, skips = split_actions(arch, self.num_layers)
        stored = [self.stem(images, training=training)]
        for i in range(self.num_layers):
            x = stored[-1]
            out = tf.switch_case(ops[i], [lambda b=b: b(x, training=training) for b in self.branches[i]])
            if i > 0:
                gates = tf.cast(skips[i], out.dtype)
                out = out + tf.add_n([gates[j] * stored[j] for j in range(i)])
                out = self.skip_norms[i](out, training=training)
            stored.append(out)
            if self.reductions[i]:
                stored = [r(o, training=training) for r, o in zip(self.reductions[i], stored)]
        return stored


def split_actions(arch, num_layers):
    """Static slices of the flat action tensor: per layer, the op and its skip bits."""
    ops, skips, position = [], [], 0
    for i in range(num_layers):
        ops.append(arch[position])
        skips.append(arch[position + 1:position + 1 + i])
        position += 1 + i
    return ops, skips
