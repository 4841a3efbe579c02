"""Schedule, masks, gradient blocking, the global-step driver, functional pruning and stripping."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from scas_tf import pruning
from scas_tf.errors import ScasError


def tiny_model():
    """Conv, depthwise (via PrunableDepthwiseConv2D), 1x1 conv and dense: all prunable."""
    inputs = keras.Input((8, 8, 3))
    x = pruning.prunable(keras.layers.Conv2D(8, 3, padding="same"))(inputs)
    x = pruning.prunable(pruning.PrunableDepthwiseConv2D(3, padding="same"))(x)
    x = pruning.prunable(keras.layers.Conv2D(16, 1))(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, pruning.prunable(keras.layers.Dense(5))(x))


def train_steps(model, pruner, optimizer, num_steps, extra_training_passes=0):
    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, model(x, training=True), from_logits=True))
        for _ in range(extra_training_passes):  # as DARTS's architecture passes would
            model(x, training=True)
        variables = model.trainable_variables
        grads = pruner.mask_gradients(tape.gradient(loss, variables), variables)
        optimizer.apply_gradients(zip(grads, variables))
        pruner.update_masks(optimizer.iterations)

    rng = np.random.default_rng(0)
    for _ in range(num_steps):
        step(tf.constant(rng.normal(size=(4, 8, 8, 3)), tf.float32), tf.constant(rng.integers(0, 5, 4)))


def test_polynomial_schedule_values():
    schedule = pruning.PruningConfig(0.9, begin_step=0, end_step=20, frequency=1).schedule()
    values = [float(schedule(tf.constant(s, tf.int64))[1]) for s in (0, 5, 10, 20, 30)]
    np.testing.assert_allclose(values, [0.0, 0.9 * (1 - 0.75 ** 3), 0.7875, 0.9, 0.9], atol=1e-6)
    config = pruning.PruningConfig(0.5, begin_step=10, end_step=30, frequency=10)
    should = [bool(config.schedule()(tf.constant(s, tf.int64))[0]) for s in (5, 10, 15, 20, 30, 40)]
    assert should == [False, True, False, True, True, False]


@pytest.mark.parametrize("bad", [dict(target_sparsity=1.0), dict(target_sparsity=-0.1),
                                 dict(target_sparsity=0.5, begin_step=10, end_step=5),
                                 dict(target_sparsity=0.5, frequency=0)])
def test_pruning_config_rejects_bad_values(bad):
    with pytest.raises(ScasError):
        pruning.PruningConfig(**bad)


def test_magnitude_mask_keeps_exactly_the_largest():
    weights = tf.constant([[0.5, -3.0, 0.0], [0.0, 2.0, -0.1]])
    mask, threshold = pruning.magnitude_mask(weights, 0.5)
    np.testing.assert_array_equal(mask.numpy(), [[1, 1, 0], [0, 1, 0]])
    assert float(threshold) == 0.5
    # Ties at zero do not keep extra entries: exactly round(6 * 0.9) = 5 of 6 kept.
    assert int(tf.reduce_sum(pruning.magnitude_mask(tf.zeros([6]), 0.1)[0])) == 5
    assert int(tf.reduce_sum(pruning.magnitude_mask(weights, 0.99)[0])) == 1  # never empty


def test_every_kernel_reaches_target_depthwise_included():
    model = tiny_model()
    pruner = pruning.Pruner(model, pruning.PruningConfig(0.8, begin_step=0, end_step=10, frequency=2))
    train_steps(model, pruner, keras.optimizers.SGD(0.1, momentum=0.9), 15)
    report = pruner.report()
    assert len(report) == 4 and any("depthwise_kernel" in w.name for w in report)
    for weight in report:
        assert abs(weight.sparsity - 0.8) < 0.02, weight
    assert abs(pruning.overall_sparsity(report) - 0.8) < 0.01


def test_extra_forward_passes_do_not_move_the_schedule():
    """Masks follow the optimiser step, not tfmot's per-wrapper count of training calls."""
    sparsities = []
    for extra in (0, 3):
        keras.utils.set_random_seed(0)
        model = tiny_model()
        pruner = pruning.Pruner(model, pruning.PruningConfig(0.9, begin_step=0, end_step=20, frequency=1))
        train_steps(model, pruner, keras.optimizers.SGD(0.01), 5, extra_training_passes=extra)
        sparsities.append(pruning.overall_sparsity(pruner.report()))
    expected = 0.9 * (1 - (1 - 5 / 20) ** 3)
    np.testing.assert_allclose(sparsities, [expected, expected], atol=0.01)


def test_pruned_weights_get_no_gradient_and_stay_zero():
    model = tiny_model()
    pruner = pruning.Pruner(model, pruning.PruningConfig(0.5, begin_step=0, end_step=2, frequency=1))
    optimizer = keras.optimizers.SGD(0.5, momentum=0.9)
    train_steps(model, pruner, optimizer, 3)
    masks = [mask.numpy() for _, mask, _ in pruner.pruning_vars]
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.random.normal([2, 8, 8, 3]), training=True) ** 2)
    grads = dict(zip([v.ref() for v in variables], pruner.mask_gradients(tape.gradient(loss, variables), variables)))
    for (weight, mask, _), before in zip(pruner.pruning_vars, masks):
        assert np.all(grads[weight.ref()].numpy()[mask.numpy() == 0] == 0)
    train_steps(model, pruner, optimizer, 5)  # after end_step: masks fixed, zeros stay zero
    for (weight, _, _), before in zip(pruner.pruning_vars, masks):
        assert np.all(weight.numpy()[before == 0] == 0)


def test_prune_tensor_follows_schedule_and_blocks_gradient():
    schedule = pruning.PruningConfig(0.75, begin_step=0, end_step=4, frequency=1).schedule()
    generated = tf.Variable(tf.range(1.0, 9.0))
    with tf.GradientTape() as tape:
        pruned = pruning.prune_tensor(generated * 2.0, schedule, tf.constant(4, tf.int64))
        loss = tf.reduce_sum(pruned)
    np.testing.assert_array_equal(pruned.numpy(), [0, 0, 0, 0, 0, 0, 14, 16])
    np.testing.assert_array_equal(tape.gradient(loss, generated).numpy(), [0, 0, 0, 0, 0, 0, 2, 2])
    start = pruning.prune_tensor(generated, schedule, tf.constant(0, tf.int64))
    assert int(tf.math.count_nonzero(start)) == 8


def test_strip_keeps_sparse_weights_and_outputs():
    model = tiny_model()
    pruner = pruning.Pruner(model, pruning.PruningConfig(0.7, begin_step=0, end_step=3, frequency=1))
    train_steps(model, pruner, keras.optimizers.SGD(0.1), 4)
    stripped = pruning.strip(model)
    assert not pruning.find_wrappers(stripped)
    x = tf.random.normal([3, 8, 8, 3])
    np.testing.assert_allclose(stripped(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
    kernels = [w for w in stripped.trainable_weights if w.shape.rank >= 2]
    nonzero = sum(int(tf.math.count_nonzero(k)) for k in kernels)
    assert abs(1 - nonzero / sum(int(tf.size(k)) for k in kernels) - 0.7) < 0.02


def test_pruner_needs_a_built_model():
    wrapper = pruning.prunable(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="build the model"):
        pruning.Pruner(wrapper, pruning.PruningConfig(0.5))


class StackedDense(keras.layers.Layer, pruning.StackedKernels):
    """Three dense kernels in one weight, the rows of very different magnitudes."""

    def build(self, input_shape):
        scales = tf.constant([1.0, 100.0, 0.01])[:, None, None]
        self.kernels = self.add_weight("kernels", (3, input_shape[-1], 4),
                                       initializer=lambda shape, dtype: tf.random.normal(shape) * scales)

    def call(self, x):
        return tf.einsum("bi,kio->bko", x, self.kernels)

    def get_prunable_weights(self):
        return [self.kernels]


def test_stacked_kernels_are_pruned_each_on_its_own():
    inputs = keras.Input((10,))
    model = keras.Model(inputs, pruning.prunable(StackedDense())(inputs))
    pruner = pruning.Pruner(model, pruning.PruningConfig(0.75, begin_step=0, end_step=1, frequency=1))
    pruner.update_masks(tf.constant(1, tf.int64))
    (wrapper,) = pruning.find_wrappers(model)
    (kernels, mask, threshold), = wrapper.pruning_vars
    # Pruned jointly, the large row would keep every weight and the small one none.
    assert [int(tf.math.count_nonzero(row)) for row in kernels] == [10, 10, 10]
    np.testing.assert_array_equal(mask.numpy() != 0, kernels.numpy() != 0)
    assert float(threshold) == pytest.approx(float(tf.reduce_min(tf.abs(kernels[2][kernels[2] != 0]))))


def test_frequency_longer_than_the_window_is_clamped_and_the_target_reached():
    """Asked for one update every 500 steps in a 50-step window of a 100-step run, the schedule
    updates once, at the window's end, instead of after the run."""
    config = pruning.gradual_config(0.75, total_steps=100, begin_fraction=0.1, end_fraction=0.6, frequency=500)
    assert (config.begin_step, config.end_step, config.frequency) == (10, 60, 50)
    model = tiny_model()
    pruner = pruning.Pruner(model, config)
    train_steps(model, pruner, keras.optimizers.SGD(0.01), 100)
    assert abs(pruning.overall_sparsity(pruner.report()) - 0.75) < 0.01
