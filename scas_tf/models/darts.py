"""DARTS networks: the search network of mixed ops weighted by softmax(alpha), and the
evaluation network of a genotype (reference: quark0/darts cnn/model_search.py, cnn/model.py).

The evaluation network is built from the op builders (`build_op`); the search network runs
the same ops for all edges that read one state at once (`MixedOps`, tested equal to build_op's
layers edge by edge) and recomputes each cell's activations in the backward pass, to fit the
reference's search in half its memory. Separable and dilated convolutions are depthwise + 1x1
convolutions, every kernel pruned. The search network normalises with non-affine BN (pool ops
too), the evaluation network with affine BN, as the reference does.
"""
import contextlib
import functools

import tensorflow as tf
import tf_keras as keras

from scas_tf import pruning
from scas_tf.errors import ScasError
from scas_tf.models import layers
from scas_tf.spaces.darts import CELL_TYPES, NUM_EDGES, NUM_NODES, PRIMITIVES, Genotype

STEM_MULTIPLIER = 3


def relu_conv_bn(x, filters, affine):
    return layers.batch_norm(layers.conv(keras.layers.ReLU()(x), filters, 1), affine)


def factorized_reduce(x, filters, affine):
    return layers.factorized_reduction(keras.layers.ReLU()(x), filters,
                                       norm=functools.partial(layers.batch_norm, affine=affine))


def sep_conv(x, filters, kernel_size, strides, affine):
    """The reference's SepConv: (ReLU, depthwise, 1x1, BN) twice, the first strided."""
    channels = x.shape[-1]
    for out, stride in ((channels, strides), (filters, 1)):
        x = layers.depthwise_conv(keras.layers.ReLU()(x), kernel_size, stride)
        x = layers.batch_norm(layers.conv(x, out, 1), affine)
    return x


def dil_conv(x, filters, kernel_size, strides, affine):
    """ReLU, depthwise with dilation 2, 1x1, BN."""
    x = layers.depthwise_conv(keras.layers.ReLU()(x), kernel_size, strides, dilation_rate=2)
    return layers.batch_norm(layers.conv(x, filters, 1), affine)


def pool(x, kind, strides, affine, normalise):
    layer = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
    # TF's "same" average pooling divides by the in-image count (count_include_pad=False).
    x = layer(3, strides=strides, padding="same")(x)
    return layers.batch_norm(x, affine) if normalise else x


def skip_connect(x, filters, strides, affine):
    return x if strides == 1 else factorized_reduce(x, filters, affine)


def build_op(x, op, filters, strides, affine, search):
    """PRIMITIVES[op] (not `none`) on x; `search` adds the search network's BN after pools."""
    name = PRIMITIVES[op] if isinstance(op, int) else op
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return pool(x, name[:3], strides, affine, normalise=search)
    if name == "skip_connect":
        return skip_connect(x, filters, strides, affine)
    if name.startswith(("sep_conv", "dil_conv")):
        kernel = int(name[-1])
        build = sep_conv if name.startswith("sep") else dil_conv
        return build(x, filters, kernel, strides, affine)
    raise ScasError(f"unknown DARTS op {name!r}")


def reduction_cells(num_layers):
    """Indices of the reduction cells (the reference's layers//3 and 2*layers//3)."""
    return (num_layers // 3, 2 * num_layers // 3)


def cell_plan(num_layers, filters):
    """(is_reduction, filters) per cell: filters double at each reduction cell."""
    if num_layers < 3 or filters < 1:
        raise ScasError(f"a DARTS network needs num_layers >= 3 and filters >= 1, got {num_layers}, {filters}")
    plan = []
    for layer in range(num_layers):
        is_reduction = layer in reduction_cells(num_layers)
        filters *= 2 if is_reduction else 1
        plan.append((is_reduction, filters))
    return plan


def preprocess(prev_prev, prev, filters, reduction_prev, affine):
    """Brings both cell inputs to `filters` channels at the previous cell's resolution."""
    if reduction_prev:
        prev_prev = factorized_reduce(prev_prev, filters, affine)
    else:
        prev_prev = relu_conv_bn(prev_prev, filters, affine)
    return prev_prev, relu_conv_bn(prev, filters, affine)


def stem(images, filters):
    return layers.batch_norm(layers.conv(images, STEM_MULTIPLIER * filters, 3))


def edges_from(state):
    """Rows of alpha (the reference's edge order) of the edges that read `state`, by target node."""
    return [node * (node + 3) // 2 + state for node in range(max(0, state - 1), NUM_NODES)]


class MixedOps(keras.layers.Layer, pruning.StackedKernels):
    """The mixed ops of all edges that read one state, computed together.

    Edge e outputs sum_k softmax(alpha)[e, k] * op_k(state) over the ops but `none` (whose
    output is zero), exactly as build_op's layers would (search=True). Run edge by edge, a cell
    is ~400 small layers and a network ~1,400 kernels, and the graph (optimiser, clipping and
    mask ops per kernel, every pass) dominates memory. Here the edges' kernels are stacked on
    axis 0 (each still pruned on its own); their convolutions run as one depthwise convolution
    over edge-major channels (the state copied once per edge) and one grouped 1x1 convolution
    (`layers.grouped_pointwise`), and the parameter-free ops (pools with their BN,
    identity), equal on all these edges, run once and are weighted per edge by one 1x1
    convolution.
    An op that ends in its own BN is weighted inside it (WeightedBatchNorm's scale).
    Inputs: [state, op weights of the cell type (1 x NUM_EDGES x ops)];
    output: [batch, height, width, edges, channels].
    """

    CONVS = {"sep_conv_3x3": (3, 1), "sep_conv_5x5": (5, 1), "dil_conv_3x3": (3, 2), "dil_conv_5x5": (5, 2)}

    def __init__(self, edges, strides, **kwargs):
        super().__init__(**kwargs)
        self.edges, self.strides = list(edges), strides

    def build(self, input_shape):
        height, width, channels = input_shape[0][1:]
        count, self.channels = len(self.edges), channels
        self.kernel_positions = -(-height // self.strides) * -(-width // self.strides)

        def kernels(name, *shape):
            return self.add_weight(name, (count, *shape), initializer=layers.stacked_he_normal(shape, count))

        def norm():
            return WeightedBatchNorm()

        self.convs = {}
        for op, (size, dilation) in self.CONVS.items():
            stages = 2 if op.startswith("sep") else 1  # sep_conv runs (ReLU, depthwise, 1x1, BN) twice
            self.convs[op] = [(kernels(f"{op}_depthwise_{i}", size, size, channels, 1),
                               kernels(f"{op}_pointwise_{i}", 1, 1, channels, channels), norm())
                              for i in range(stages)]
        self.pool_norms = {"max": norm(), "avg": norm()}
        if self.strides > 1:  # skip_connect is a factorized reduction per edge
            half = channels // 2
            self.reduce = (kernels("skip_path1", 1, 1, channels, half),
                           kernels("skip_path2", 1, 1, channels, channels - half), norm())
        super().build(input_shape)

    def op_kernels(self, op):
        """The op's stacked kernels, in the order build_op's layers create theirs."""
        if op in self.CONVS:
            return [w for depthwise, pointwise, _ in self.convs[op] for w in (depthwise, pointwise)]
        return list(self.reduce[:2]) if op == "skip_connect" and self.strides > 1 else []

    def get_prunable_weights(self):
        return [w for op in PRIMITIVES[1:] for w in self.op_kernels(op)]

    def edge_major(self, x, channels=None):
        """[batch, h, w, edges * channels] (edge-major channels) as [batch, h, w, edges, channels]."""
        return tf.reshape(x, [-1, *x.shape[1:3], len(self.edges), channels or self.channels])

    def edgewise_depthwise(self, x, kernel, strides=1, dilation=1):
        """Edge e's depthwise kernel on edge e's channels (edge-major); a strided dilated one
        subsamples first, as layers.depthwise_conv does."""
        if strides > 1 and dilation > 1:
            x, strides, dilation = x[:, ::strides, ::strides, :], 1, dilation // strides
        kernel = tf.reshape(tf.transpose(kernel, [1, 2, 0, 3, 4]), [*kernel.shape[1:3], -1, 1])
        if strides > 1:
            return tf.nn.depthwise_conv2d(x, kernel, [1, strides, strides, 1], "SAME")
        return layers.depthwise_conv2d(x, kernel, dilation)

    @staticmethod
    def pointwise(x, kernel, strides=1):
        """Edge e's 1x1 kernel on edge e's channels (`layers.grouped_pointwise`), or on a shared
        input (as many input channels as one kernel) a plain 1x1 convolution; edge-major output
        channels."""
        edges, _, _, channels, out = kernel.shape
        if x.shape[-1] != channels and strides == 1:
            return layers.grouped_pointwise(x, tf.reshape(kernel, [edges, channels, out]))
        kernel = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [1, 1, channels, -1])
        return tf.nn.conv2d(x, kernel, strides, "SAME")

    def conv_op(self, copies, op, scale, training):
        """`copies`: the ReLU of the state once per edge (edge-major), the first stage's input;
        `scale`: the op's weight per edge-major channel, applied by the last BN."""
        _, dilation = self.CONVS[op]
        x = copies
        stages = self.convs[op]
        for stage, (depthwise, pointwise, norm) in enumerate(stages):
            if stage == 0:
                x = self.edgewise_depthwise(x, depthwise, self.strides, dilation)
            else:
                x = self.edgewise_depthwise(tf.nn.relu(x), depthwise)
            x = norm(self.pointwise(x, pointwise), training=training,
                     scale=scale if stage == len(stages) - 1 else None)
        return x

    def skip_op(self, relu, scale, training):
        """The factorized reduction of a strided edge, weighted."""
        path1, path2, norm = self.reduce
        shifted = layers.shifted_by_one(relu)
        paths = tf.concat([self.edge_major(self.pointwise(relu, path1, 2), path1.shape[-1]),
                           self.edge_major(self.pointwise(shifted, path2, 2), path2.shape[-1])], axis=-1)
        flat = tf.reshape(paths, [-1, *paths.shape[1:3], len(self.edges) * self.channels])
        return norm(flat, training=training, scale=scale)

    def call(self, inputs, training=None):
        x, op_weights = inputs
        weights = tf.gather(op_weights[0], self.edges)  # [edges, ops]
        # An op that ends in BN (all but pools, whose BN is shared by the edges, and identity)
        # gets its weight as BN's scale, per edge-major channel.
        per_channel = tf.reshape(tf.tile(tf.transpose(weights)[:, :, None], [1, 1, self.channels]),
                                 [len(PRIMITIVES), -1])  # [ops, edges * channels], edge-major
        scales = {op: per_channel[PRIMITIVES.index(op)] for op in (*self.CONVS, "skip_connect")}
        relu = tf.nn.relu(x)
        shared = {
            "max_pool_3x3": self.pool_norms["max"](tf.nn.max_pool2d(x, 3, self.strides, "SAME"), training=training),
            "avg_pool_3x3": self.pool_norms["avg"](tf.nn.avg_pool2d(x, 3, self.strides, "SAME"), training=training),
        }
        if self.strides == 1:
            shared["skip_connect"] = x
        copies = tf.tile(relu, [1, 1, 1, len(self.edges)])  # cheaper than reordering each op's channels
        weighted = [self.conv_op(copies, op, scales[op], training) for op in self.CONVS]
        if self.strides > 1:
            weighted.append(self.skip_op(relu, scales["skip_connect"], training))
        return self.edge_major(tf.add_n(weighted + [self.weighted_shared(shared, weights)]))

    def weighted_shared(self, shared, weights):
        """Each edge's weighted sum of the shared outputs, edge-major: one 1x1 convolution of
        their concatenation whose kernel block (op k, edge e) is weights[e, k] times the identity.
        With its gradient it ran 1.2-3.8x faster than multiplications broadcast over [batch, h, w,
        edges, channels] (whose weight gradients are reductions over all but one axis)."""
        ops = [PRIMITIVES.index(op) for op in shared]
        kernel = tf.einsum("ek,cd->kced", tf.gather(weights, ops, axis=1), tf.eye(self.channels))
        kernel = tf.reshape(kernel, [1, 1, len(ops) * self.channels, len(self.edges) * self.channels])
        return tf.nn.conv2d(tf.concat(list(shared.values()), axis=-1), kernel, 1, "SAME")

    def get_config(self):
        return {**super().get_config(), "edges": self.edges, "strides": self.strides}


class WeightedBatchNorm(keras.layers.BatchNormalization):
    """The search network's non-affine BN; called with `scale` (one value per channel: an op's
    weight per edge-major channel), the fused op multiplies its output by it, so the weighting
    costs no pass of its own, forward or backward. The moving statistics move as Keras's fused
    BN moves them (momentum 0.9; the variance with Bessel's correction, as PyTorch's)."""

    def __init__(self, **kwargs):
        super().__init__(center=False, scale=False, momentum=0.9, epsilon=1e-5, **kwargs)

    def call(self, inputs, training=None, scale=None):
        if scale is None:
            return super().call(inputs, training=training)
        offset = tf.zeros_like(scale)
        if not training:
            return tf.compat.v1.nn.fused_batch_norm(inputs, scale, offset, self.moving_mean, self.moving_variance,
                                                    self.epsilon, is_training=False)[0]
        output, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, self.moving_mean, self.moving_variance, self.epsilon,
            is_training=True, exponential_avg_factor=1.0 - self.momentum)
        self.moving_mean.assign(mean)
        self.moving_variance.assign(variance)
        return output


def mixed_ops_model(state_shape, state, strides):
    """MixedOps of the edges that read `state` (pruned), as a functional model of [state, op weights]."""
    state_input = keras.Input(state_shape)
    weights = keras.Input((NUM_EDGES, len(PRIMITIVES)))  # fed as [1, edges, ops]
    mixed = pruning.prunable(MixedOps(edges_from(state), strides, name=f"mixed_ops_{state}"))
    return keras.Model([state_input, weights], mixed([state_input, weights]), name=f"edges_from_{state}")


class SearchCell(keras.Model):
    """A search cell: preprocessing, then node i sums the mixed edges from all earlier states;
    the output concatenates the NUM_NODES nodes. The edges that read one state run together
    (MixedOps), each state's as soon as the state exists."""

    def __init__(self, input_shapes, filters, reduction, reduction_prev, **kwargs):
        super().__init__(**kwargs)
        inputs = [keras.Input(shape) for shape in input_shapes]
        self.preprocess = keras.Model(inputs, list(preprocess(*inputs, filters, reduction_prev, affine=False)))
        height, width, _ = self.preprocess.output_shape[1][1:]
        stride = 2 if reduction else 1
        node_shape = (-(-height // stride), -(-width // stride), filters)
        self.mixed = [mixed_ops_model((height, width, filters) if state < 2 else node_shape, state,
                                      stride if state < 2 else 1)
                      for state in range(NUM_NODES + 1)]  # the last node feeds no edge
        self.output_shape_ = (*node_shape[:2], NUM_NODES * filters)

    def call(self, inputs, training=None):
        *cell_inputs, weights = inputs
        states = list(self.preprocess(cell_inputs, training=training))
        edge_outputs = [tf.unstack(mixed([state, weights], training=training), axis=3)
                        for mixed, state in zip(self.mixed, states)]
        for node in range(NUM_NODES):
            # State i's edges go to nodes max(0, i - 1), ..., NUM_NODES - 1, in that order.
            states.append(tf.add_n([edge_outputs[i][node - max(0, i - 1)] for i in range(node + 2)]))
            if len(edge_outputs) < len(self.mixed):
                edge_outputs.append(tf.unstack(self.mixed[len(edge_outputs)]([states[-1], weights],
                                                                             training=training), axis=3))
        return tf.concat(states[2:], axis=-1)


class SearchNetwork(keras.Model):
    """The DARTS supernet: network weights (pruned) and architecture parameters alpha (one
    NUM_EDGES x ops matrix per cell type, 1e-3 * N(0, 1) as in the reference). Training-mode
    passes keep the activations of the last `kept_cells` cells (the network's, unless a call
    says otherwise) for the backward pass and recompute the others' there (`recomputed`)."""

    def __init__(self, info, filters=16, num_layers=8, kept_cells=0):
        super().__init__(name="darts_search")
        self.kept_cells = kept_cells
        self.stem = layers.submodel(info.image_shape, lambda x: stem(x, filters))
        shapes = [self.stem.output_shape[1:]] * 2
        self.cells, self.cell_types = [], []
        reduction_prev = False
        for layer, (is_reduction, cell_filters) in enumerate(cell_plan(num_layers, filters)):
            cell = SearchCell(shapes, cell_filters, is_reduction, reduction_prev, name=f"cell_{layer}")
            self.cells.append(cell)
            self.cell_types.append("reduce" if is_reduction else "normal")
            shapes = [shapes[1], cell.output_shape_]
            reduction_prev = is_reduction
        self.head = layers.submodel(shapes[1], lambda x: layers.classifier(x, info.num_classes))
        # One initializer per alpha: an unseeded Keras initializer repeats its values.
        self.alphas = {t: self.add_weight(f"alpha_{t}", (NUM_EDGES, len(PRIMITIVES)),
                                          initializer=keras.initializers.RandomNormal(stddev=1e-3))
                       for t in CELL_TYPES}
        self.build((None, *info.image_shape))

    @property
    def weight_variables(self):
        alphas = {a.ref() for a in self.alphas.values()}
        return [v for v in self.trainable_variables if v.ref() not in alphas]

    @property
    def alpha_variables(self):
        return [self.alphas[t] for t in CELL_TYPES]

    def op_weights(self):
        return {t: tf.nn.softmax(self.alphas[t], axis=-1) for t in CELL_TYPES}

    def call(self, images, training=False, kept_cells=None):
        weights = {t: w[None] for t, w in self.op_weights().items()}
        prev_prev = prev = self.stem(images, training=training)
        first_kept = len(self.cells) - (self.kept_cells if kept_cells is None else kept_cells)
        for index, (cell, cell_type) in enumerate(zip(self.cells, self.cell_types)):
            run = (recomputed(cell) if training and index < first_kept
                   else functools.partial(run_cell, cell, training=training))
            prev_prev, prev = prev, run(prev_prev, prev, weights[cell_type])
        return self.head(prev, training=training)


def run_cell(cell, prev_prev, prev, weights, training):
    return cell([prev_prev, prev, weights], training=training)


def recomputed(cell):
    """The cell in training mode, its activations recomputed in the backward pass rather than
    kept from the forward one, so that a pass holds one recomputed cell's activations at a time
    (at the reference's batch of 64 all cells' are ~5 GiB; the recomputation costs the cell's
    forward pass). The peak comes in the first cells' backward pass, at full resolution: until
    they are larger than it, the late cells' kept activations cost no peak memory (SearchNetwork's
    `kept_cells`). BN's moving statistics are frozen while recomputing: the forward pass has
    updated them with these very batch statistics already."""
    calls = []

    def forward(prev_prev, prev, weights):
        with frozen_statistics(cell) if calls else contextlib.nullcontext():
            calls.append(True)
            return run_cell(cell, prev_prev, prev, weights, training=True)
    return tf.recompute_grad(forward)


@contextlib.contextmanager
def frozen_statistics(model):
    """BN layers of `model` normalise by batch statistics but leave their moving ones as they
    are (momentum 1) in the layer calls traced meanwhile."""
    norms = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    momentums = [n.momentum for n in norms]
    for norm in norms:
        norm.momentum = 1.0
    try:
        yield
    finally:
        for norm, momentum in zip(norms, momentums):
            norm.momentum = momentum


def genotype_cell(prev_prev, prev, genotype_cell_ops, concat, filters, reduction, reduction_prev, drop_path):
    states = list(preprocess(prev_prev, prev, filters, reduction_prev, affine=True))
    for node in range(NUM_NODES):
        pair = []
        for op, state_index in genotype_cell_ops[2 * node:2 * node + 2]:
            strides = 2 if reduction and state_index < 2 else 1
            out = build_op(states[state_index], op, filters, strides, affine=True, search=False)
            if drop_path and out is not states[state_index]:  # identities are never dropped
                out = layers.DropPath()(out)
            pair.append(out)
        states.append(keras.layers.Add()(pair))
    return keras.layers.Concatenate()([states[s] for s in concat])


def build_darts_model(genotype, info, filters=36, num_layers=20, auxiliary=False, drop_path=0.0):
    """The evaluation network of a genotype (Genotype or its text). With `auxiliary`, the model
    outputs [logits, auxiliary logits] (the head after cell 2*num_layers//3); the logits alone
    are `inference_model(model)`. `drop_path` > 0 adds DropPath layers (rate set by the trainer)."""
    if not isinstance(genotype, Genotype):
        genotype = Genotype.from_text(genotype)
    inputs = keras.Input(info.image_shape)
    prev_prev = prev = stem(inputs, filters)
    reduction_prev, aux_logits = False, None
    for layer, (is_reduction, cell_filters) in enumerate(cell_plan(num_layers, filters)):
        ops, concat = genotype.cell("reduce" if is_reduction else "normal")
        prev_prev, prev = prev, genotype_cell(prev_prev, prev, ops, concat, cell_filters, is_reduction,
                                              reduction_prev, drop_path)
        reduction_prev = is_reduction
        if auxiliary and layer == 2 * num_layers // 3:
            aux_logits = layers.auxiliary_classifier(prev, info.num_classes)
    logits = layers.classifier(prev, info.num_classes)
    outputs = [logits, aux_logits] if auxiliary else logits
    return keras.Model(inputs, outputs, name="darts")
