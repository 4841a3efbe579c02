"""ENAS micro search space: the fixed-architecture builder and the shared-weight supernet.

Both build every block (candidate ops, input calibration, factorized reduction, stem, head)
from the same functional helpers, so a searched op and its final-training counterpart are the
same layers; only the normalisation differs (`norm`: BN in the fixed network, batch-statistics
BN in the supernet, as in the reference's search child). Both follow the reference's
search-mode layout: at a reduction layer the previous output is first factorized-reduced and
the reduction cell runs at stride 1 on [previous, reduced previous] (the reference's fixed mode
instead runs stride-2 ops on the reduction cell's inputs).
"""
import tensorflow as tf
import tf_keras as keras

from scas_tf import pruning
from scas_tf.errors import ScasError
from scas_tf.models import layers
from scas_tf.spaces.enas_micro import CELL_LENGTH, NUM_NODES, OPS, MicroArch, unused_nodes


def reduction_layers(num_layers):
    """Indices of the reduction cells among the num_layers + 2 cells (reference: N//3, 2(N//3)+1)."""
    distance = num_layers // 3
    return (distance, 2 * distance + 1)


def cell_plan(num_layers, filters):
    """(is_reduction, filters) per cell: filters double at each reduction cell."""
    if num_layers < 0 or filters < 1:
        raise ScasError(f"ENAS micro needs num_layers >= 0 and filters >= 1, got {num_layers}, {filters}")
    plan = []
    for layer in range(num_layers + 2):
        is_reduction = layer in reduction_layers(num_layers)
        filters *= 2 if is_reduction else 1
        plan.append((is_reduction, filters))
    return plan


class BatchStatsNormalization(keras.layers.Layer):
    """BN by the current batch's statistics, in training and evaluation alike, as the
    reference's search child does: with weights shared across architectures, moving averages
    would describe no single architecture, so rewards would be computed on wrong statistics."""

    def build(self, input_shape):
        channels = [input_shape[-1]]
        self.gamma = self.add_weight("gamma", channels, initializer="ones")
        self.beta = self.add_weight("beta", channels, initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        mean, variance = tf.nn.moments(inputs, axes=[0, 1, 2])
        return tf.nn.batch_normalization(inputs, mean, variance, self.beta, self.gamma, 1e-5)


def batch_stats_norm(x):
    return BatchStatsNormalization()(x)


def stem(x, filters, norm=layers.batch_norm):
    """3x3 convolution to 3F channels and BN, no ReLU (each consumer applies its own)."""
    return norm(layers.conv(x, 3 * filters, 3))


def relu_conv_bn(x, filters, norm=layers.batch_norm):
    return norm(layers.conv(keras.layers.ReLU()(x), filters, 1))


def separable(x, filters, kernel_size, norm=layers.batch_norm):
    """The reference's sep op: (ReLU, depthwise kxk, pointwise 1x1, BN) twice."""
    for _ in range(2):
        x = layers.depthwise_conv(keras.layers.ReLU()(x), kernel_size)
        x = norm(layers.conv(x, filters, 1))
    return x


def candidate_op(x, op, filters, norm=layers.batch_norm):
    """OPS[op] at stride 1; x already has `filters` channels (calibrated), so pools and identity
    keep the node's shape."""
    name = OPS[op]
    if name.startswith("sep"):
        return separable(x, filters, int(name[-1]), norm)
    if name == "avg3x3":
        return keras.layers.AveragePooling2D(3, strides=1, padding="same")(x)
    if name == "max3x3":
        return keras.layers.MaxPooling2D(3, strides=1, padding="same")(x)
    return x


def calibrate(x, size, filters, norm=layers.batch_norm):
    """Brings a cell input to spatial `size` and `filters` channels (reference
    `_maybe_calibrate_size`): a larger input is factorized-reduced, a channel mismatch
    projected by ReLU-1x1 conv-BN; a matching input passes unchanged."""
    if tuple(x.shape[1:3]) != tuple(size):
        return layers.factorized_reduction(keras.layers.ReLU()(x), filters, norm=norm)
    if x.shape[-1] != filters:
        return relu_conv_bn(x, filters, norm)
    return x


def head(x, num_classes, dropout):
    return layers.classifier(keras.layers.ReLU()(x), num_classes, dropout)


def fixed_cell(inputs, cell, filters, drop_path_scale=0.0):
    """One cell of a fixed architecture; its output concatenates the unused nodes. With
    drop_path_scale > 0, every op output but identity's goes through DropPath."""
    size = inputs[1].shape[1:3]
    nodes = [calibrate(x, size, filters) for x in inputs]
    for node in range(NUM_NODES):
        pair = []
        for index, op in (cell[4 * node:4 * node + 2], cell[4 * node + 2:4 * node + 4]):
            out = candidate_op(nodes[index], op, filters)
            if drop_path_scale and OPS[op] != "identity":
                out = layers.DropPath(drop_path_scale)(out)
            pair.append(out)
        nodes.append(keras.layers.Add()(pair))
    outputs = [nodes[i] for i in unused_nodes(cell)]
    return outputs[0] if len(outputs) == 1 else keras.layers.Concatenate()(outputs)


def auxiliary_cell(num_layers):
    """The reference's aux head reads the cell after the second reduction cell (the last cell
    when there is none after it)."""
    return min(reduction_layers(num_layers)[1] + 1, num_layers + 1)


def build_micro_model(arch, info, num_layers=6, filters=20, dropout=0.2, auxiliary=False, drop_path=0.0):
    """The network of `arch` (a MicroArch or its text) for training from scratch: stem, then
    num_layers + 2 cells, reduction cells at reduction_layers(num_layers). Default dropout is
    the reference's final training (keep_prob 0.8). `auxiliary` adds the auxiliary head after
    `auxiliary_cell` (the model then outputs [logits, auxiliary logits]); `drop_path` adds
    DropPath to the ops, cell l dropping (l + 1) / (num_layers + 2) of the trainer's rate, as
    the reference's final training does."""
    if not isinstance(arch, MicroArch):
        arch = MicroArch.from_text(arch)
    inputs = keras.Input(info.image_shape)
    prev_prev = prev = stem(inputs, filters)
    aux_logits = None
    for layer, (is_reduction, cell_filters) in enumerate(cell_plan(num_layers, filters)):
        if is_reduction:
            prev_prev, prev = prev, layers.factorized_reduction(prev, cell_filters)
        cell = arch.reduce if is_reduction else arch.normal
        drop_path_scale = (layer + 1) / (num_layers + 2) if drop_path else 0.0
        prev_prev, prev = prev, fixed_cell([prev_prev, prev], cell, cell_filters, drop_path_scale)
        if auxiliary and layer == auxiliary_cell(num_layers):
            aux_logits = layers.auxiliary_classifier(prev, info.num_classes)
    logits = head(prev, info.num_classes, dropout)
    return keras.Model(inputs, [logits, aux_logits] if auxiliary else logits, name="enas_micro")


class InputIndexedSeparable(keras.layers.Layer, pruning.StackedKernels):
    """The sep op of one (node, slot) of a supernet cell with its own weights for each input
    the node may read, as the reference's search child keeps them (`_enas_conv`: every weight,
    BN scale and offset included, is [num_inputs, ...] and indexed by the chosen input).
    Computes `separable` (ReLU, depthwise, pointwise, batch-statistics BN; twice) with row
    `index` of each stacked weight; each row is pruned as a kernel of its own.
    call([x, index]) with `index` an int32 scalar tensor."""

    def __init__(self, kernel_size, filters, num_inputs, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size, self.filters, self.num_inputs = kernel_size, filters, num_inputs

    def build(self, input_shape):
        channels, size, count = input_shape[0][-1], self.kernel_size, self.num_inputs

        def stacked(name, *shape):
            return self.add_weight(name, (count, *shape), initializer=layers.stacked_he_normal(shape, count))

        self.depthwise = [stacked("depthwise_0", size, size, channels, 1),
                          stacked("depthwise_1", size, size, self.filters, 1)]
        self.pointwise = [stacked("pointwise_0", 1, 1, channels, self.filters),
                          stacked("pointwise_1", 1, 1, self.filters, self.filters)]
        self.gammas = [self.add_weight(f"gamma_{i}", (count, self.filters), initializer="ones") for i in range(2)]
        self.betas = [self.add_weight(f"beta_{i}", (count, self.filters), initializer="zeros") for i in range(2)]
        super().build(input_shape)

    def get_prunable_weights(self):
        return self.depthwise + self.pointwise

    def call(self, inputs):
        x, index = inputs
        # A one-hot contraction rather than a gather: its gradient is dense, as masks need.
        select = tf.one_hot(index, self.num_inputs, dtype=x.dtype)
        for stage in range(2):
            row = [tf.tensordot(select, w[stage], 1) for w in (self.depthwise, self.pointwise, self.gammas, self.betas)]
            depthwise, pointwise, gamma, beta = row
            x = tf.nn.depthwise_conv2d(tf.nn.relu(x), depthwise, [1, 1, 1, 1], "SAME")
            x = tf.nn.conv2d(x, pointwise, 1, "SAME")
            mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
            x = tf.nn.batch_normalization(x, mean, variance, beta, gamma, 1e-5)
        return x

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "filters": self.filters,
                "num_inputs": self.num_inputs}


class SupernetCell(keras.layers.Layer):
    """A cell whose every (node, slot) holds all candidate ops, chosen by an int32 cell tensor;
    the separable ops keep weights per input index (`InputIndexedSeparable`).

    As the set of unused nodes varies, the output is ReLU-1x1 conv-BN of the concatenation of
    all NUM_NODES + 2 ids with the used ones zeroed: the same as the reference's concat of the unused
    nodes and 1x1 conv with their gathered weight blocks, i.e. BN(sum_j unused_j *
    conv_j(ReLU(node_j))), but with a static channel count and one kernel to prune."""

    def __init__(self, input_shapes, filters, **kwargs):
        super().__init__(**kwargs)
        size = input_shapes[1][:2]
        self.node_shape = (*size, filters)
        self.calibrations = [
            layers.submodel(shape, lambda x: calibrate(x, size, filters, batch_stats_norm))
            for shape in input_shapes]
        self.separables = [[[
            pruning.prunable(InputIndexedSeparable(int(name[-1]), filters, node + 2,
                                                   name=f"{self.name}_node{node + 2}_slot{slot}_{name}"))
            for name in OPS if name.startswith("sep")] for slot in range(2)] for node in range(NUM_NODES)]
        for separable in tf.nest.flatten(self.separables):  # built now: the Pruner needs the weights
            with tf.name_scope(separable.layer.name):
                separable.build([tf.TensorShape((None, *self.node_shape)), tf.TensorShape(())])
        all_nodes_shape = (*size, (NUM_NODES + 2) * filters)
        self.combine = layers.submodel(all_nodes_shape, lambda x: relu_conv_bn(x, filters, batch_stats_norm))

    def call(self, inputs, cell_arch):
        # training=False throughout: these blocks normalise by batch statistics in any mode.
        nodes = [calibration(x, training=False) for calibration, x in zip(self.calibrations, inputs)]
        uses = []
        for node, slots in enumerate(self.separables):
            available = tf.stack(nodes)
            pair = []
            for slot, (sep3, sep5) in enumerate(slots):
                index, op = cell_arch[4 * node + 2 * slot], cell_arch[4 * node + 2 * slot + 1]
                x = tf.gather(available, index)
                pair.append(tf.switch_case(op, [  # in the order of OPS
                    lambda: sep3([x, index]), lambda: sep5([x, index]),
                    lambda: tf.nn.avg_pool2d(x, 3, 1, "SAME"), lambda: tf.nn.max_pool2d(x, 3, 1, "SAME"),
                    lambda: x]))
                uses.append(tf.one_hot(index, NUM_NODES + 2))
            nodes.append(pair[0] + pair[1])
        unused = tf.cast(tf.equal(tf.add_n(uses), 0.0), nodes[-1].dtype)
        channel_mask = tf.repeat(unused, nodes[-1].shape[-1])
        return self.combine(tf.concat(nodes, axis=-1) * channel_mask, training=False)


class MicroSupernet(keras.Model):
    """The shared-weight child of the search: call(images, arch) with `arch` an int32 tensor of
    MicroArch.actions. One traced function serves every architecture (ops by tf.switch_case,
    inputs by tf.gather). As in the reference, separable-op weights exist once per (cell,
    node, slot, op, chosen input), so architectures that feed a node from different inputs do
    not share (and prune) one kernel. Filters double at each reduction cell, as in the fixed
    network. BN always normalises by batch statistics (as the reference's search child), so
    `training` only switches the head's dropout."""

    def __init__(self, info, num_layers=6, filters=20, dropout=0.1):
        super().__init__(name="enas_micro_supernet")
        self.stem = layers.submodel(info.image_shape, lambda x: stem(x, filters, batch_stats_norm))
        shapes = [self.stem.output_shape[1:]] * 2
        self.reductions, self.cells = [], []
        for layer, (is_reduction, cell_filters) in enumerate(cell_plan(num_layers, filters)):
            reduction = None
            if is_reduction:
                reduction = layers.submodel(
                    shapes[1], lambda x: layers.factorized_reduction(x, cell_filters, norm=batch_stats_norm))
                shapes = [shapes[1], reduction.output_shape[1:]]
            cell = SupernetCell(shapes, cell_filters, name=f"cell_{layer}")
            self.reductions.append(reduction)
            self.cells.append(cell)
            shapes = [shapes[1], cell.node_shape]
        self.head = layers.submodel(shapes[1], lambda x: head(x, info.num_classes, dropout))

    def call(self, images, arch, training=False):
        cell_archs = (arch[:CELL_LENGTH], arch[CELL_LENGTH:])
        prev_prev = prev = self.stem(images, training=False)
        for reduction, cell in zip(self.reductions, self.cells):
            if reduction is not None:
                prev_prev, prev = prev, reduction(prev, training=False)
            prev_prev, prev = prev, cell([prev_prev, prev], cell_archs[reduction is not None])
        return self.head(prev, training=training)
