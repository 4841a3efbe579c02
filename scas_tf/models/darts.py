"""DARTS networks: the search network of mixed ops weighted by softmax(alpha), and the
evaluation network of a genotype (reference: quark0/darts cnn/model_search.py, cnn/model.py).

Both are built from the same op builders (`OPS`), so an op found by the search is the layers
the final network trains. Separable and dilated convolutions are depthwise + 1x1 convolutions,
every kernel pruned. The search network normalises with non-affine BN (pool ops too), the
evaluation network with affine BN, as the reference does.
"""
import functools

import tensorflow as tf
import tf_keras as keras

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


class MixedEdge(keras.layers.Layer):
    """sum_k softmax(alpha)[edge, k] * op_k(x) over the ops that are not `none` (whose output
    is zero). Input: [weights of the cell type (1 x NUM_EDGES x ops), op outputs...]."""

    def __init__(self, edge, **kwargs):
        super().__init__(**kwargs)
        self.edge = edge

    def call(self, inputs):
        weights, *outputs = inputs
        row = weights[0, self.edge]
        return tf.add_n([row[op] * out for op, out in zip(range(1, len(PRIMITIVES)), outputs)])

    def get_config(self):
        return {**super().get_config(), "edge": self.edge}


def mixed_edge_model(state_shape, filters, strides, edge):
    """One edge of a search cell: every op but `none` on a state, summed with the op weights."""
    state = keras.Input(state_shape)
    weights = keras.Input((NUM_EDGES, len(PRIMITIVES)))  # fed as [1, edges, ops]
    outputs = [build_op(state, op, filters, strides, affine=False, search=True) for op in range(1, len(PRIMITIVES))]
    return keras.Model([state, weights], MixedEdge(edge)([weights, *outputs]), name=f"edge_{edge}")


class SearchCell(keras.Model):
    """A search cell: preprocessing, then node i sums the mixed edges from all earlier states;
    the output concatenates the NUM_NODES nodes."""

    def __init__(self, input_shapes, filters, reduction, reduction_prev, **kwargs):
        super().__init__(**kwargs)
        self.preprocess = [
            layers.submodel(input_shapes[0], lambda x: (factorized_reduce(x, filters, affine=False) if reduction_prev
                                                        else relu_conv_bn(x, filters, affine=False))),
            layers.submodel(input_shapes[1], lambda x: relu_conv_bn(x, filters, affine=False))]
        state_shapes = [p.output_shape[1:] for p in self.preprocess]
        self.edges = []
        for node in range(NUM_NODES):
            for index in range(node + 2):
                strides = 2 if reduction and index < 2 else 1
                edge = mixed_edge_model(state_shapes[index], filters, strides, len(self.edges))
                self.edges.append(edge)
            state_shapes.append(edge.output_shape[1:])
        self.output_shape_ = (*state_shapes[-1][:2], NUM_NODES * filters)

    def call(self, inputs, training=None):
        *cell_inputs, weights = inputs
        states = [p(x, training=training) for p, x in zip(self.preprocess, cell_inputs)]
        edges = iter(self.edges)
        for _ in range(NUM_NODES):
            states.append(tf.add_n([next(edges)([state, weights], training=training) for state in states]))
        return tf.concat(states[2:], axis=-1)


class SearchNetwork(keras.Model):
    """The DARTS supernet: network weights (pruned) and architecture parameters alpha (one
    NUM_EDGES x ops matrix per cell type, 1e-3 * N(0, 1) as in the reference)."""

    def __init__(self, info, filters=16, num_layers=8):
        super().__init__(name="darts_search")
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
        init = keras.initializers.RandomNormal(stddev=1e-3)
        self.alphas = {t: self.add_weight(f"alpha_{t}", (NUM_EDGES, len(PRIMITIVES)), initializer=init)
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

    def call(self, images, training=False):
        weights = {t: w[None] for t, w in self.op_weights().items()}
        prev_prev = prev = self.stem(images, training=training)
        for cell, cell_type in zip(self.cells, self.cell_types):
            prev_prev, prev = prev, cell([prev_prev, prev, weights[cell_type]], training=training)
        return self.head(prev, training=training)


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
            aux_logits = auxiliary_classifier(prev, info.num_classes)
    logits = layers.classifier(prev, info.num_classes)
    outputs = [logits, aux_logits] if auxiliary else logits
    return keras.Model(inputs, outputs, name="darts")


def auxiliary_classifier(x, num_classes):
    """The reference's AuxiliaryHeadCIFAR (made for 8x8 inputs; a smaller map pools less):
    ReLU, 5x5 average pool stride 3, 1x1 conv 128-BN-ReLU, 2x2 conv 768-BN-ReLU, dense."""
    x = keras.layers.ReLU()(x)
    if x.shape[1] >= 5:
        x = keras.layers.AveragePooling2D(5, strides=3)(x)
    x = keras.layers.ReLU()(layers.batch_norm(layers.conv(x, 128, 1)))
    kernel = min(2, x.shape[1])
    x = layers.conv(x, 768, kernel, padding="valid")
    x = keras.layers.ReLU()(layers.batch_norm(x))
    return layers.classifier(x, num_classes, name="auxiliary_classifier")
