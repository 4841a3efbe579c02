"""The shared layers' fast paths compute what TensorFlow's own ops compute."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from scas_tf.models import layers


def outputs_and_gradients(convolve, x, kernel):
    """The output and d(sum(y * sin(y))) w.r.t. x and the kernel, traced as a search step is."""
    @tf.function
    def run(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = convolve(x, kernel)
            loss = tf.reduce_sum(y * tf.sin(y))
        return [y, *tape.gradient(loss, [x, kernel])]
    return run(x, kernel)


@pytest.mark.parametrize("onednn", ["as probed here", False])
@pytest.mark.parametrize("shape", [(3, 8, 8, 5), (2, 7, 9, 4), (2, 3, 3, 2)])
@pytest.mark.parametrize("size, dilation", [(5, 1), (7, 1), (3, 2), (5, 2), (7, 2), (3, 3)])
def test_depthwise_conv2d_and_its_gradients_equal_tensorflows(shape, size, dilation, onednn, monkeypatch):
    """Dilated in the kernel where it dilates (oneDNN), its filter gradient over the dilation's
    phases and a wide kernel's in columns, or by tf.nn (TensorFlow's own kernels): the same
    outputs and gradients."""
    if onednn is False:
        monkeypatch.setattr(layers, "onednn_depthwise_kernels", lambda: False)
    x = tf.random.normal(shape, seed=1)
    kernel = tf.random.normal([size, size, shape[-1], 1], seed=2)
    fast = outputs_and_gradients(lambda x, k: layers.depthwise_conv2d(x, k, dilation), x, kernel)
    expected = outputs_and_gradients(
        lambda x, k: tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "SAME", dilations=[dilation] * 2), x, kernel)
    for name, got, want in zip(("output", "input gradient", "filter gradient"), fast, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(tf.reduce_max(tf.abs(want))), err_msg=name)


def test_a_dilated_depthwise_convolutions_second_derivatives_equal_tensorflows():
    """The input gradient is a depthwise_conv2d itself, so a gradient of gradients is right too
    (the dilating kernel's own registered gradient is not, under oneDNN)."""
    x, kernel = tf.random.normal([2, 9, 9, 3], seed=4), tf.random.normal([3, 3, 3, 1], seed=5)

    def second(convolve):
        @tf.function
        def run(x, kernel):
            with tf.GradientTape() as outer:
                outer.watch([x, kernel])
                with tf.GradientTape() as inner:
                    inner.watch(x)
                    y = convolve(x, kernel)
                    loss = tf.reduce_sum(y * tf.sin(y))
                penalty = tf.reduce_sum(tf.square(inner.gradient(loss, x)))
            return outer.gradient(penalty, [x, kernel])
        return run(x, kernel)
    fast = second(lambda x, k: layers.depthwise_conv2d(x, k, 2))
    expected = second(lambda x, k: tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "SAME", dilations=[2, 2]))
    for got, want in zip(fast, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(tf.reduce_max(tf.abs(want))))


@pytest.mark.parametrize("size, dilation, fast_path", [(5, 2, True), (5, 1, True), (3, 1, False)])
def test_the_depthwise_layer_trains_through_the_fast_path_and_infers_through_tensorflows(
        size, dilation, fast_path, monkeypatch):
    """In training the layer's dilated or wide convolution is depthwise_conv2d (equal to Keras's
    own); in inference, which a saved model runs on any machine, TensorFlow's portable op."""
    calls = []
    fast = layers.depthwise_conv2d
    monkeypatch.setattr(layers, "depthwise_conv2d", lambda *args: calls.append(args) or fast(*args))
    inputs = keras.Input([9, 9, 3])
    model = keras.Model(inputs, layers.depthwise_conv(inputs, size, dilation_rate=dilation))
    plain = keras.layers.DepthwiseConv2D(size, dilation_rate=dilation, padding="same", use_bias=False)
    plain.build([None, 9, 9, 3])
    plain.depthwise_kernel.assign(model.layers[-1].layer.depthwise_kernel)
    x = tf.random.normal([2, 9, 9, 3], seed=3)
    np.testing.assert_allclose(model(x, training=True), plain(x), atol=1e-5)
    assert len(calls) == fast_path
    np.testing.assert_allclose(model(x, training=False), plain(x), atol=1e-5)
    assert len(calls) == fast_path
