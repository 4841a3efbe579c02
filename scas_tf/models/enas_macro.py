"""ENAS macro search space: the fixed-architecture builder and the shared-weight supernet.

Both build every candidate op from the same functional blocks (`branch`), so a searched op and
its final-training counterpart are the same layers. Separable ops are real depthwise + 1x1
convolutions and pool ops work (the reference's fixed mode builds sep ops as full convolutions
and crashes on pool ops).
"""
import math

import tensorflow as tf
import tf_keras as keras

from scas_tf.models import layers
from scas_tf.spaces.enas_macro import OPS, pool_layers


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
    return layers.batch_norm(layers.conv(inputs, filters, 3))


def head(x, num_classes, dropout):
    return layers.classifier(keras.layers.ReLU()(x), num_classes, dropout)


def build_macro_model(arch, info, filters=36, dropout=0.1):
    """The fixed network of `arch`, as the reference's final training builds it: skip inputs
    are concatenated with the op's output, then ReLU, 1x1 conv and BN; filters double at
    each pool layer, where every stored output is reduced."""
    arch.validate()
    inputs = keras.Input(info.image_shape)
    x = stem(inputs, filters)
    outputs = []
    for i, (op, bits) in enumerate(zip(arch.ops, arch.skips)):
        out = branch(x, op, filters)
        if i > 0:
            parts = [o for o, b in zip(outputs, bits) if b] + [out]
            out = keras.layers.Concatenate()(parts) if len(parts) > 1 else out
            out = layers.batch_norm(layers.conv(keras.layers.ReLU()(out), filters, 1))
        outputs.append(out)
        if i in pool_layers(arch.num_layers):
            filters *= 2
            outputs = [layers.factorized_reduction(o, filters) for o in outputs]
        x = outputs[-1]
    return keras.Model(inputs, head(x, info.num_classes, dropout), name="enas_macro")


class MacroSupernet(keras.Model):
    """Every layer holds all six candidate ops; an architecture (an int32 tensor of
    `MacroArch.actions`) picks one per layer with tf.switch_case and gates the skip
    connections, so one traced function serves every architecture. As in the reference's
    search mode, skips are summed with the op's output and batch-normalised, and the number of
    filters stays constant."""

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
            self.skip_norms.append(layers.submodel(shape, layers.batch_norm))
            # At a pool layer, each stored output gets its own reduction; elsewhere none.
            pooling = i in pool_layers(num_layers)
            self.reductions.append([layers.submodel(shape, lambda x: layers.factorized_reduction(x, filters))
                                    for _ in range(i + 1) if pooling])
            if pooling:
                height, width = math.ceil(height / 2), math.ceil(width / 2)
        self.head = layers.submodel((height, width, filters), lambda x: head(x, info.num_classes, dropout))

    def call(self, images, arch, training=False):
        ops, skips = split_actions(arch, self.num_layers)
        x = self.stem(images, training=training)
        outputs = []
        for i in range(self.num_layers):
            out = tf.switch_case(ops[i], [lambda b=b: b(x, training=training) for b in self.branches[i]])
            if i > 0:
                gates = tf.cast(skips[i], out.dtype)
                out = out + tf.add_n([gates[j] * outputs[j] for j in range(i)])
            outputs.append(self.skip_norms[i](out, training=training))
            if self.reductions[i]:
                outputs = [r(o, training=training) for r, o in zip(self.reductions[i], outputs)]
            x = outputs[-1]
        return self.head(x, training=training)


def split_actions(arch, num_layers):
    """Static slices of the flat action tensor: per layer, the op and its skip bits."""
    ops, skips, position = [], [], 0
    for i in range(num_layers):
        ops.append(arch[position])
        skips.append(arch[position + 1:position + 1 + i])
        position += 1 + i
    return ops, skips

