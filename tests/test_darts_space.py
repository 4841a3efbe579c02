"""DARTS encoding and networks: genotype text, derivation from alpha, the builders."""
import functools

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from scas_tf import accounting, architectures, data, pruning
from scas_tf.errors import ScasError
from scas_tf.models import darts, layers
from scas_tf.spaces.darts import NUM_EDGES, PRIMITIVES, PUBLISHED, Genotype, derive, derive_cell

REFERENCE_REPR = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=[2, 3, 4, 5])")


def test_genotype_round_trips_and_reads_the_reference_repr():
    for genotype in PUBLISHED.values():
        assert Genotype.from_text(genotype.to_text()) == genotype
    assert Genotype.from_text(REFERENCE_REPR) == PUBLISHED["DARTS_V2"]
    space, genotype = architectures.parse("darts:DARTS_V2")
    assert space == "darts" and genotype == PUBLISHED["DARTS_V2"]


@pytest.mark.parametrize("text, reason", [
    ("normal=[(sep_conv_3x3,0)]", "missing normal_concat"),
    (PUBLISHED["DARTS_V2"].to_text().replace("dil_conv_3x3", "conv_7x7"), "unknown op 'conv_7x7'"),
    (PUBLISHED["DARTS_V2"].to_text().replace("(dil_conv_3x3,2)", "(dil_conv_3x3,5)"), "cannot take input 5"),
    (PUBLISHED["DARTS_V2"].to_text().replace("(sep_conv_3x3,0),", "", 1), "needs 8 (op, input) pairs"),
    (PUBLISHED["DARTS_V2"].to_text().replace("normal_concat=[2,3,4,5]", "normal_concat=[2,2]"), "distinct"),
    (PUBLISHED["DARTS_V2"].to_text().replace("(max_pool_3x3,0)", "(none,0)"), "unknown op 'none'"),
    ("DARTS_V9", "expected normal="),
])
def test_malformed_genotypes_are_rejected_with_the_reason(text, reason):
    with pytest.raises(ScasError, match="malformed DARTS genotype") as error:
        Genotype.from_text(text)
    assert reason in str(error.value) and "\n" not in str(error.value)


def test_derivation_keeps_the_two_strongest_non_none_edges_with_their_best_real_op():
    op = PRIMITIVES.index
    weights = np.full((NUM_EDGES, len(PRIMITIVES)), 0.05)
    # Node 0 (edges 0-1): edge 0 is dominated by `none`, which is ignored: sep_conv_5x5 wins.
    weights[0, op("none")], weights[0, op("sep_conv_5x5")] = 0.9, 0.3
    weights[1, op("max_pool_3x3")] = 0.2
    # Node 1 (edges 2-4): edge 4 (input 2) and edge 2 (input 0) are the strongest.
    weights[2, op("dil_conv_3x3")], weights[3, op("avg_pool_3x3")], weights[4, op("skip_connect")] = 0.4, 0.1, 0.6
    # Node 2 (edges 5-8) and node 3 (edges 9-13): ties keep the earlier input first.
    weights[5, op("sep_conv_3x3")] = weights[8, op("sep_conv_3x3")] = 0.5
    weights[13, op("dil_conv_5x5")], weights[9, op("skip_connect")] = 0.7, 0.3
    cell = derive_cell(weights)
    assert cell == (("sep_conv_5x5", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("dil_conv_3x3", 0),
                    ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("dil_conv_5x5", 4), ("skip_connect", 0))
    probabilities = weights / weights.sum(axis=1, keepdims=True)
    genotype = derive(np.log(probabilities), np.zeros_like(weights))  # derive takes alpha, softmaxes it
    assert genotype.normal == derive_cell(probabilities) and genotype.normal_concat == (2, 3, 4, 5)


def test_published_darts_v2_has_the_reference_size():
    """quark0/darts train.py logs "param size = 3.349342MB" for DARTS_V2 at C=36, 20 cells
    (auxiliary head excluded, BN scale and offset included)."""
    info = data.dataset_info("cifar10")
    model = architectures.build_model("darts:DARTS_V2", info, filters=36, num_layers=20, auxiliary=True,
                                      drop_path=0.2)
    assert len(model.outputs) == 2
    inference = keras.Model(model.inputs, model.outputs[0])
    cost = accounting.model_cost(inference).summary()
    assert cost["params"] == 3_349_342
    assert cost["prunable_params"] > 0.98 * cost["params"]  # every conv, depthwise and dense kernel


def test_every_primitive_builds_in_both_cells_and_small_inputs_keep_the_auxiliary_head():
    ops = [op for op in PRIMITIVES if op != "none"]
    cell = tuple((ops[k % len(ops)], k // 2 if k % 2 else 0) for k in range(8))
    genotype = Genotype(cell, (2, 3, 4, 5), cell, (2, 3, 4, 5))
    info = data.dataset_info("mnist")  # 28x28: 7x7 maps at the auxiliary head
    model = darts.build_darts_model(genotype, info, filters=4, num_layers=3, auxiliary=True, drop_path=0.3)
    logits, auxiliary = model(tf.zeros([2, *info.image_shape]), training=True)
    assert logits.shape == auxiliary.shape == (2, 10)


def test_a_strided_dilated_depthwise_convolution_is_the_dilated_one_subsampled():
    """TF cannot stride and dilate at once; subsampling first computes the same outputs."""
    x = tf.random.normal([1, 10, 10, 3], seed=1)
    strided = keras.Model(inputs := keras.Input([10, 10, 3]), layers.depthwise_conv(inputs, 3, 2, dilation_rate=2))
    kernel = strided.layers[-1].layer.depthwise_kernel
    dense = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME", dilations=[2, 2])
    np.testing.assert_allclose(strided(x).numpy(), dense[:, ::2, ::2].numpy(), rtol=1e-5, atol=1e-5)


def test_factorized_reductions_second_path_reads_the_pixels_the_reference_does():
    """The reference's second path is a stride-2 1x1 convolution of x[:, :, 1:, 1:]: on even
    sizes it reads the odd rows and columns. shifted_by_one moves x up and left, zero-filled."""
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
    shifted = layers.shifted_by_one(tf.constant(x)).numpy()
    np.testing.assert_array_equal(shifted[:, :-1, :-1], x[:, 1:, 1:])
    assert not shifted[:, -1].any() and not shifted[:, :, -1].any()
    np.testing.assert_array_equal(shifted[:, ::2, ::2], x[:, 1::2, 1::2])


def test_drop_path_drops_whole_examples_only_in_training():
    drop = layers.DropPath()
    x = tf.ones([1000, 2, 2, 3])
    drop.build(x.shape)
    drop.rate.assign(0.25)
    out = drop(x, training=True).numpy()
    kept = out.reshape(1000, -1)
    assert np.all(np.isclose(kept, 0.0) | np.isclose(kept, 1 / 0.75)) and np.all(kept.min(1) == kept.max(1))
    assert 0.2 < np.mean(kept[:, 0] == 0) < 0.3
    np.testing.assert_array_equal(drop(x, training=False), x)


@pytest.mark.parametrize("side, strides, pointwise", [(8, 1, "block-diagonal"), (7, 2, "block-diagonal"),
                                                      (8, 1, "grouped"), (8, 2, "grouped")])
def test_mixed_ops_compute_every_edge_as_build_op_layers_would(side, strides, pointwise, monkeypatch):
    """MixedOps runs all edges that read one state together; edge by edge and op by op it must
    equal build_op's layers (an edge on its own, the layers the evaluation network trains)
    holding the same kernels, in training mode; with its edges' 1x1 convolutions as one
    block-diagonal convolution (on CPUs) or one grouped op (on accelerators)."""
    monkeypatch.setattr(layers, "native_grouped_convolutions", lambda: pointwise == "grouped")
    state_shape, filters = (side, side, 4), 4
    model = darts.mixed_ops_model(state_shape, state=0, strides=strides)
    (wrapper,) = pruning.find_wrappers(model)
    mixed = wrapper.layer
    assert mixed.edges == [0, 2, 5, 9] and mixed.kernel_positions == (-(-side // strides)) ** 2
    x = tf.random.normal([3, *state_shape])
    for op in PRIMITIVES[1:]:
        one_hot = tf.one_hot([PRIMITIVES.index(op)] * NUM_EDGES, len(PRIMITIVES))[None]
        together = model([x, one_hot], training=True)
        for edge in range(len(mixed.edges)):
            inputs = keras.Input(state_shape)
            alone = keras.Model(inputs, darts.build_op(inputs, op, filters, strides, affine=False, search=True))
            assert len(alone.trainable_variables) == len(mixed.op_kernels(op))
            for kernel, stacked in zip(alone.trainable_variables, mixed.op_kernels(op)):
                kernel.assign(stacked[edge])
            np.testing.assert_allclose(together[:, :, :, edge], alone(x, training=True), atol=1e-4,
                                       err_msg=f"{op}, edge {edge}")


@pytest.mark.parametrize("side, strides", [(8, 1), (7, 2)])
def test_mixed_ops_weigh_each_op_by_its_weight_and_pass_the_weights_their_gradients(side, strides):
    """With any op weights (most ops scale their output inside BN), an edge's output is the
    weighted sum of its ops' outputs, and its gradient w.r.t. a weight is the op's output."""
    model = darts.mixed_ops_model((side, side, 4), state=0, strides=strides)
    x = tf.random.normal([3, side, side, 4])
    weights = tf.nn.softmax(tf.random.normal([1, NUM_EDGES, len(PRIMITIVES)]), axis=-1)
    cotangent = tf.random.normal([3, -(-side // strides), -(-side // strides), 4, 4])
    per_op = tf.stack([model([x, tf.one_hot([k] * NUM_EDGES, len(PRIMITIVES))[None]], training=True)
                       for k in range(len(PRIMITIVES))], axis=-1)  # [batch, h, w, edges, channels, ops]
    with tf.GradientTape() as tape:
        tape.watch(weights)
        together = model([x, weights], training=True)
        projected = tf.reduce_sum(together * cotangent)
    edge_weights = tf.gather(weights[0], [0, 2, 5, 9])
    np.testing.assert_allclose(together, tf.reduce_sum(per_op * edge_weights[:, None], axis=-1), atol=1e-4)
    expected = tf.einsum("bhwecv,bhwec->ev", per_op, cotangent)
    np.testing.assert_allclose(tf.gather(tape.gradient(projected, weights)[0], [0, 2, 5, 9]), expected,
                               rtol=1e-4, atol=1e-3)


def test_weighted_batch_norm_is_keras_batch_norm_times_the_scale_with_the_same_moving_statistics():
    x, scale = tf.random.normal([6, 5, 5, 8], 3.0, 2.0), tf.random.uniform([8])
    weighted, plain = darts.WeightedBatchNorm(), keras.layers.BatchNormalization(center=False, scale=False,
                                                                                 momentum=0.9, epsilon=1e-5)
    for _ in range(2):
        np.testing.assert_allclose(weighted(x, training=True, scale=scale), plain(x, training=True) * scale,
                                   rtol=1e-5, atol=1e-5)
    for a, b in zip(weighted.non_trainable_weights, plain.non_trainable_weights):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(weighted(x, training=False, scale=scale), plain(x, training=False) * scale,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kept_cells", [0, 2, 3])
def test_search_network_recomputes_all_cells_but_the_last_kept_ones(kept_cells, monkeypatch):
    network = darts.SearchNetwork(data.dataset_info("mnist"), filters=2, num_layers=3, kept_cells=kept_cells)
    recomputed = []

    def counted(cell):
        recomputed.append(cell.name)
        return functools.partial(darts.run_cell, cell, training=True)
    monkeypatch.setattr(darts, "recomputed", counted)
    network(tf.zeros([2, 28, 28, 1]), training=True)
    assert recomputed == [cell.name for cell in network.cells[:3 - kept_cells]]
    network(tf.zeros([2, 28, 28, 1]), training=False)
    assert len(recomputed) == 3 - kept_cells  # inference keeps nothing for a backward pass


@pytest.mark.parametrize("kept_cells", [0, 1])
def test_search_cells_recompute_activations_with_the_same_gradients_and_statistics(kept_cells):
    """Training-mode passes recompute the cells before the last `kept_cells` in the backward
    pass: the gradients must be those of the plain forward pass (every cell kept), and BN's
    moving statistics move once per pass, not twice."""
    network = darts.SearchNetwork(data.dataset_info("mnist"), filters=2, num_layers=3, kept_cells=kept_cells)
    images, labels = tf.random.uniform([4, 28, 28, 1]), tf.constant([0, 1, 2, 3])

    def plain_forward():
        network.kept_cells = len(network.cells)
        try:
            return network(images, training=True)
        finally:
            network.kept_cells = kept_cells

    def gradients_and_statistics(forward):
        statistics = [v for v in network.variables if "moving" in v.name]
        saved = [v.numpy() for v in statistics]
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, forward()))
        gradients = tape.gradient(loss, network.trainable_variables)
        moved = [v.numpy() for v in statistics]
        for v, value in zip(statistics, saved):
            v.assign(value)
        return gradients, moved

    recomputed, recomputed_statistics = gradients_and_statistics(lambda: network(images, training=True))
    plain, plain_statistics = gradients_and_statistics(plain_forward)
    for a, b in zip(recomputed, plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(recomputed_statistics, plain_statistics):
        np.testing.assert_allclose(a, b, rtol=1e-6)
