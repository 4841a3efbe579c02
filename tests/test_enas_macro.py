"""ENAS macro space: encoding round-trips, the published architecture, builders, supernet."""
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from scas_tf import accounting, architectures, data, pruning
from scas_tf.errors import ScasError
from scas_tf.models import layers
from scas_tf.models.enas_macro import MacroSupernet, build_macro_model
from scas_tf.spaces.enas_macro import MacroArch, pool_layers

# melodyguan/enas scripts/cifar10_macro_final.sh: 24 layers, layer i = op + i skip bits.
PUBLISHED_MACRO = """
0 | 3 0 | 0 1 0 | 2 0 0 1 | 2 0 0 0 0 | 3 1 1 0 1 0 | 2 0 0 0 0 0 1 | 2 0 1 1 0 1 1 1 | 1 0 1 1 1 0 1 0 1 |
0 0 0 0 0 0 0 0 0 0 | 2 0 0 0 0 0 1 0 0 0 0 | 0 1 0 0 1 1 0 0 0 0 1 1 | 2 0 1 0 0 0 0 0 1 0 1 1 0 |
1 0 0 1 0 0 0 1 1 1 0 1 0 1 | 0 1 1 0 1 0 1 0 0 0 0 0 1 0 0 | 2 0 0 1 0 0 0 0 0 0 0 1 0 1 0 1 |
2 0 1 0 0 0 1 0 0 1 1 1 1 0 0 1 0 | 2 0 0 0 0 1 0 1 0 1 0 0 1 0 1 0 0 1 | 3 0 1 1 0 1 0 0 0 0 0 1 0 1 0 1 0 0 0 |
3 0 1 1 0 0 0 0 0 0 0 0 0 1 1 0 0 0 0 1 | 0 1 0 0 1 0 1 1 0 0 0 1 0 0 0 0 0 1 1 0 0 |
3 0 1 0 1 1 0 0 1 0 1 1 0 1 1 0 1 0 0 1 0 0 | 0 1 0 1 0 1 0 0 0 0 0 0 0 0 1 0 1 0 0 1 0 0 0 |
0 1 1 0 0 0 1 1 1 0 1 0 0 0 1 0 1 0 0 1 1 0 0 0
"""


def test_random_architectures_round_trip():
    rng = np.random.default_rng(0)
    for num_layers in (1, 4, 12):
        arch = MacroArch.sample(rng, num_layers)
        assert MacroArch.from_text(arch.to_text()) == arch
        assert MacroArch.from_actions(arch.actions) == arch
        assert len(arch.actions) == num_layers * (num_layers + 1) // 2


def test_published_architecture_parses():
    arch = MacroArch.from_text(PUBLISHED_MACRO)
    assert arch.num_layers == 24 and arch.ops[:4] == (0, 3, 0, 2) and arch.skips[3] == (0, 0, 1)
    assert set(arch.ops) == {0, 1, 2, 3}  # the published final search used 4 branches


def test_pool_layers_are_the_references():
    """general_child.py: pool_distance = L // 3; pool_layers = [pool_distance - 1, 2 * pool_distance - 1]."""
    for num_layers, expected in ((5, (0, 1)), (8, (1, 3)), (11, (2, 5)), (12, (3, 7)), (24, (7, 15))):
        assert pool_layers(num_layers) == expected, num_layers


def source_layer(tensor):
    """The layer that produced `tensor`, looking through a factorized reduction's final BN."""
    layer = tensor._keras_history.layer
    if isinstance(layer, keras.layers.BatchNormalization) and layer.name != "stem":
        layer = layer.input._keras_history.layer
    return layer.name


def test_skip_bit_zero_is_the_stem_in_the_fixed_network():
    """As the reference's `_fixed_layer`: layer i's stored outputs are [stem, layer 0, ...,
    layer i-1]; its bit 0 concatenates the stem (reduced at the pool layers before it)."""
    info = data.dataset_info("mnist")
    # Six layers (pool layers 1 and 3); layer 1's only skip is bit 0, so is layer 5's.
    arch = MacroArch.from_text("0 | 1 1 | 2 0 0 | 3 0 0 0 | 4 0 0 0 0 | 5 1 0 0 0 0")
    model = build_macro_model(arch, info, filters=4)
    assert source_layer(model.get_layer("skips_1").input[0]) == "stem"
    assert source_layer(model.get_layer("skips_5").input[0]) == "reduce_3_from_0_concat"
    assert len(model.get_layer("skips_5").input) == 2  # the stem and the op's output
    assert not any(layer.name in ("skips_2", "skips_3", "skips_4") for layer in model.layers)
    published = build_macro_model(MacroArch.from_text(PUBLISHED_MACRO), data.dataset_info("cifar10"), filters=4)
    assert source_layer(published.get_layer("skips_2").input[0]) == "stem"  # layer 2 reads "0 1 0"


def test_skip_bit_zero_is_the_stem_in_the_supernet():
    """The supernet's last layer with only bit 0 set is BN(op(previous) + stem), the stem as
    reduced at the pool layers; without it, BN(op(previous))."""
    info = data.dataset_info("mnist")
    supernet = MacroSupernet(info, num_layers=4, filters=4)  # pool layers 0 and 1
    images = tf.random.normal([2, 28, 28, 1], seed=1)
    for stem_bit in (1, 0):
        arch = MacroArch.from_text(f"0 | 1 0 | 2 0 0 | 4 {stem_bit} 0 0")
        stored = supernet.stored_outputs(images, tf.constant(arch.actions, tf.int32))
        assert len(stored) == 5
        layer_out = supernet.branches[3][4](stored[3]) + stem_bit * stored[0]
        np.testing.assert_allclose(stored[4], supernet.skip_norms[3](layer_out), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("text, reason", [
    ("0 1", "2 integers is not L(L+1)/2"), ("0 | 6 0 | 0 1 0", "layer 1 op 6 is not in 0..5"),
    ("0 | 3 2 | 0 1 0", "layer 1 needs 1 skip bits of 0 or 1, got [2]"), ("0 | x 0 | 0 0 0", "'x' is not an integer"),
    ("", "0 integers")])
def test_malformed_strings_are_clear_errors(text, reason):
    with pytest.raises(ScasError, match=f"malformed ENAS macro architecture: .*{re.escape(reason)}"):
        MacroArch.from_text(text)


def test_fixed_model_concatenates_skips_and_doubles_filters():
    info = data.dataset_info("cifar10")
    arch = MacroArch.from_text("1 | 4 1 | 5 0 1 | 3 1 1 1 | 2 0 0 0 0 | 0 1 0 1 0 1")
    model = build_macro_model(arch, info, filters=8)
    assert model(tf.zeros([2, 32, 32, 3])).shape == (2, 10)
    cost = accounting.model_cost(model)
    assert any(c.kind == "depthwise" for c in cost.layers)  # sep ops are really separable
    # Pool layers 1 and 3 halve 32 -> 16 -> 8 and double 8 -> 16 -> 32 filters.
    pooled = next(layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D))
    assert pooled.input_shape[1:] == (8, 8, 32)
    assert architectures.build_model(f"enas_macro:{arch.to_text()}", info, filters=8).count_params() == model.count_params()


def test_fixed_model_takes_an_auxiliary_head_and_drop_path():
    info = data.dataset_info("mnist")
    arch = MacroArch.sample(np.random.default_rng(3), 6)
    model = architectures.build_model(f"enas_macro:{arch.to_text()}", info, filters=4, auxiliary=True,
                                      drop_path=0.3, dropout=0.5)
    logits, aux_logits = model(tf.zeros([2, 28, 28, 1]), training=True)
    assert logits.shape == aux_logits.shape == (2, 10)
    scales = [layer.depth_scale for layer in model.layers if isinstance(layer, layers.DropPath)]
    np.testing.assert_allclose(scales, [(i + 1) / 6 for i in range(6)])
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.5]


def test_supernet_switches_architectures_without_retracing_and_prunes_every_kernel():
    info = data.dataset_info("mnist")
    supernet = MacroSupernet(info, num_layers=3, filters=4)
    pruner = pruning.Pruner(supernet, pruning.PruningConfig(0.8, begin_step=0, end_step=4, frequency=1))
    optimizer = keras.optimizers.SGD(0.05)

    @tf.function
    def step(images, labels, arch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                labels, supernet(images, arch, training=True), from_logits=True))
        variables = supernet.trainable_variables
        grads = pruner.mask_gradients(tape.gradient(loss, variables), variables)
        optimizer.apply_gradients((g, v) for g, v in zip(grads, variables) if g is not None)
        pruner.update_masks(optimizer.iterations)
        return loss

    rng = np.random.default_rng(1)
    images, labels = tf.random.normal([4, 28, 28, 1]), tf.constant([0, 1, 2, 3])
    archs = [MacroArch.sample(rng, 3) for _ in range(6)]
    step(images, labels, tf.constant(archs[0].actions, tf.int32))
    traces = step.experimental_get_tracing_count()
    for arch in archs[1:]:
        assert np.isfinite(step(images, labels, tf.constant(arch.actions, tf.int32)).numpy())
    assert step.experimental_get_tracing_count() == traces
    report = pruner.report()
    assert any("depthwise" in w.name for w in report)
    assert all(w.nonzero == max(1, round(w.size * 0.2)) for w in report)  # unsampled branches too
    assert abs(pruning.overall_sparsity(report) - 0.8) < 0.01
