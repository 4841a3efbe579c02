"""ENAS micro: the encoding, the fixed builder on the published architecture, and the supernet
(one trace for every architecture, real gradients, every kernel pruned)."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from scas_tf import architectures, pruning
from scas_tf.data.sources import dataset_info
from scas_tf.errors import ScasError
from scas_tf.models import layers
from scas_tf.models.enas_micro import (InputIndexedSeparable, MicroSupernet, batch_stats_norm,
                                       build_micro_model, separable)
from scas_tf.spaces.enas_micro import MicroArch, choice_sizes, unused_nodes

# The reference's final architecture (scripts/cifar10_micro_final.sh).
REFERENCE_NORMAL = "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1"
REFERENCE_REDUCE = "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1"
REFERENCE = f"{REFERENCE_NORMAL} {REFERENCE_REDUCE}"


def test_text_and_actions_round_trip_for_random_samples():
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = MicroArch.sample(rng)
        assert MicroArch.from_text(arch.to_text()) == arch
        assert MicroArch.from_actions(arch.actions) == arch
        assert len(arch.to_text().split(" ")) == 40
        spaced = f" {' | '.join(map(str, arch.normal))} |\n\t{'  '.join(map(str, arch.reduce))} "
        assert MicroArch.from_text(spaced) == arch


def test_sampling_covers_every_choice():
    sizes = choice_sizes() * 2
    assert len(sizes) == 40 and sizes[:4] == [2, 5, 2, 5] and sizes[16:20] == [6, 5, 6, 5]
    rng = np.random.default_rng(1)
    seen = np.array([MicroArch.sample(rng).actions for _ in range(300)])
    for position, size in enumerate(sizes):
        assert set(seen[:, position]) == set(range(size)), position


@pytest.mark.parametrize("text, reason", [
    ("0 2 0 0", "expected 40 integers"),
    (REFERENCE.replace("4", "x", 1), "'x' is not an integer"),
    (REFERENCE.replace("2", "2.0", 1), "'2.0' is not an integer"),
    ("2 " + REFERENCE[2:], "normal cell node 2: input 2 is not in 0..1"),
    (REFERENCE_NORMAL + " 1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 7 1", "reduce cell node 6: input 7 is not in 0..5"),
    (REFERENCE.replace("4", "5", 1), "normal cell node 3: op 5 is not in 0..4"),
    ("-1 " + REFERENCE[2:], "input -1"),
])
def test_malformed_strings_are_user_errors(text, reason):
    with pytest.raises(ScasError, match="malformed ENAS micro architecture") as error:
        MicroArch.from_text(text)
    assert reason in str(error.value) and "\n" not in str(error.value)


def test_reference_architecture_parses_with_reference_outputs():
    arch = MicroArch.from_text(REFERENCE)
    assert arch.to_text() == REFERENCE
    assert unused_nodes(arch.normal) == [2, 3, 4, 5, 6]
    assert unused_nodes(arch.reduce) == [2, 4, 5, 6]
    with pytest.raises(ScasError):
        MicroArch(arch.normal[:-1], arch.reduce)


def test_fixed_model_of_reference_architecture():
    info = dataset_info("cifar10")
    filters = 8
    model = build_micro_model(REFERENCE, info, num_layers=2, filters=filters)
    assert model(tf.random.normal((2,) + info.image_shape), training=False).shape == (2, 10)
    # Cells: reduce, reduce, normal, normal; the last normal cell concatenates 5 nodes of 4F.
    pooled = next(layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D))
    assert pooled.input_shape == (None, 8, 8, 5 * 4 * filters)
    kernels = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    assert not any(isinstance(layer, kernels) for layer in model.layers)  # all wrapped
    stripped = pruning.strip(model)  # wrappers sit at top level, so export strips them all
    assert not pruning.find_wrappers(stripped)


def test_fixed_model_with_auxiliary_head_and_depth_scaled_drop_path():
    """As the reference's final training: the auxiliary head after the cell following the
    second reduction cell, drop-path on every op but identity, cell l dropping (l + 1) / (L + 2)
    of the rate."""
    info = dataset_info("mnist")
    model = architectures.build_model(f"enas_micro:{REFERENCE}", info, filters=4, num_layers=3,
                                      auxiliary=True, drop_path=0.4, dropout=0.2)
    logits, aux_logits = model(tf.zeros([2, 28, 28, 1]), training=True)
    assert logits.shape == aux_logits.shape == (2, 10)
    scales = sorted({layer.depth_scale for layer in model.layers if isinstance(layer, layers.DropPath)})
    np.testing.assert_allclose(scales, [(cell + 1) / 5 for cell in range(5)])
    # The normal cell has 2 identities among its 10 ops, the reduction cell 1.
    drops = sum(isinstance(layer, layers.DropPath) for layer in model.layers)
    assert drops == 3 * (10 - 2) + 2 * (10 - 1)  # cells 0, 2, 4 normal; 1, 3 reduction (L=3)


def supernet_train_step(supernet, pruner, optimizer):
    @tf.function
    def step(images, labels, arch):
        with tf.GradientTape() as tape:
            logits = supernet(images, arch, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        variables = supernet.trainable_variables
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(pruner.mask_gradients(grads, variables), variables))
        pruner.update_masks(optimizer.iterations)
        return {v.ref(): g for v, g in zip(variables, grads)}

    return step


def test_input_indexed_separable_row_is_the_fixed_networks_op():
    """Row r of every stacked weight computes exactly `separable` (the fixed network's sep op,
    with batch-statistics BN as in the search) on input r's kernels."""
    filters, index = 6, 2
    indexed = InputIndexedSeparable(5, filters, num_inputs=4)
    x = tf.random.normal([3, 8, 8, filters], seed=2)
    out = indexed([x, tf.constant(index)])
    inputs = keras.Input((8, 8, filters))
    plain = keras.Model(inputs, separable(inputs, filters, 5, batch_stats_norm))
    kernels = [w for w in plain.weights if "kernel" in w.name]
    norms = [layer for layer in plain.layers if hasattr(layer, "gamma")]
    for stage in range(2):
        indexed.gammas[stage].assign(tf.random.uniform([4, filters], 0.5, 1.5))
        indexed.betas[stage].assign(tf.random.normal([4, filters]))
        kernels[2 * stage].assign(indexed.depthwise[stage][index])
        kernels[2 * stage + 1].assign(indexed.pointwise[stage][index])
        norms[stage].gamma.assign(indexed.gammas[stage][index])
        norms[stage].beta.assign(indexed.betas[stage][index])
    out = indexed([x, tf.constant(index)])
    np.testing.assert_allclose(out, plain(x), rtol=1e-4, atol=1e-4)


def test_supernet_one_trace_real_gradients_and_full_pruning():
    info = dataset_info("cifar10")
    supernet = MicroSupernet(info, num_layers=1, filters=8)  # cells: reduce, reduce, normal
    pruner = pruning.Pruner(supernet, pruning.PruningConfig(0.8, 0, 4, 1))
    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(supernet.trainable_variables)  # a variable made while tracing would retrace
    step = supernet_train_step(supernet, pruner, optimizer)
    reference = MicroArch.from_text(REFERENCE)
    no_convs = MicroArch.sample(np.random.default_rng(2)).actions
    no_convs = tuple(v if i % 2 == 0 else 2 + v % 3 for i, v in enumerate(no_convs))  # pools, identity
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(2,) + info.image_shape), tf.float32)
    labels = tf.constant([3, 7])
    for arch in (reference.actions, no_convs) * 3:
        grads = step(images, labels, tf.constant(arch, tf.int32))
        depthwise = [g for ref, g in grads.items() if "depthwise" in ref.deref().name]
        moved = sum(int(tf.math.count_nonzero(g)) for g in depthwise)
        # Only a sampled op trains: with no separable op chosen, no depthwise kernel moves.
        assert (moved > 0) == (arch == reference.actions)
        assert any(float(tf.norm(g)) > 0 for g in grads.values())
        if arch == reference.actions:
            # The reference's normal node 2 reads input 0 with sep5x5 ("0 2" is avg; "0 0": input
            # 0, sep3x3 in slot 1): only row 0 of that slot's sep3x3 weights learns.
            cell = supernet.cells[2]  # cells: reduce, reduce, normal
            sep3 = cell.separables[0][1][0].layer
            gradient = grads[sep3.depthwise[0].ref()].numpy()
            assert np.abs(gradient[0]).sum() > 0 and not np.any(gradient[1:])
    assert step.experimental_get_tracing_count() == 1

    # 3 cells x 2 slots x 2 separable ops x 2 depthwise convs, one kernel per input a node may
    # read (2 + 3 + 4 + 5 + 6 over its 5 nodes), each pruned on its own.
    rows = [(w, row) for w in (v for v in supernet.trainable_weights if "depthwise" in v.name)
            for row in range(w.shape[0])]
    assert len(rows) == 3 * 2 * 2 * 2 * 20
    for weight in supernet.trainable_weights:
        if "depthwise" in weight.name or "pointwise" in weight.name:
            for row in weight.numpy():
                assert abs(1 - np.count_nonzero(row) / row.size - 0.8) < 0.05, weight.name
    report = pruner.report()
    assert abs(pruning.overall_sparsity(report) - 0.8) < 0.01
