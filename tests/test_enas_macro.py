"""ENAS macro space: encoding round-trips, the published architecture, builders, supernet."""
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from scas_tf import accounting, architectures, data, pruning
from scas_tf.errors import ScasError
from scas_tf.models.enas_macro import MacroSupernet, build_macro_model
from scas_tf.spaces.enas_macro import MacroArch, controller_decisions, pool_layers

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
    assert pool_layers(24) == (7, 15)


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
    assert model.layers[-4].output_shape[1:] == (8, 8, 32)
    assert architectures.build_model(f"enas_macro:{arch.to_text()}", info, filters=8).count_params() == model.count_params()


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


def test_decision_sequence_matches_encoding():
    decisions = controller_decisions(5)
    assert sum(d.size if d.kind == "skips" else 1 for d in decisions) == len(MacroArch.sample(np.random.default_rng(0), 5).actions)
