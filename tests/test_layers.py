"""The shared layers' fast paths compute what TensorFlow's own ops compute."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from scas_tf.models import layers


DERIVATIVES = ("output", "input gradient", "kernel gradient", "second derivative (input)",
               "second derivative (kernel)")


def derivatives(convolve, x, kernel):
    """The output y, the gradients of sum(y * sin(y)) w.r.t. x and the kernel, and those of the
    sum of their squares (second derivatives), traced as a search step is."""
    @tf.function
    def run(x, kernel):
        with tf.GradientTape() as outer:
            outer.watch([x, kernel])
            with tf.GradientTape() as inner:
                inner.watch([x, kernel])
                y = convolve(x, kernel)
                loss = tf.reduce_sum(y * tf.sin(y))
            dx, dkernel = inner.gradient(loss, [x, kernel])
            penalty = tf.reduce_sum(tf.square(dx)) + tf.reduce_sum(tf.square(dkernel))
        return [y, dx, dkernel, *outer.gradient(penalty, [x, kernel])]
    return run(x, kernel)


def assert_same_derivatives(fast, expected, x, kernel):
    for name, got, want in zip(DERIVATIVES, derivatives(fast, x, kernel), derivatives(expected, x, kernel)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(tf.reduce_max(tf.abs(want))), err_msg=name)


@pytest.mark.parametrize("onednn", ["as probed here", False])
@pytest.mark.parametrize("shape", [(3, 8, 8, 5), (2, 7, 9, 4), (2, 3, 3, 2)])
@pytest.mark.parametrize("size, dilation", [(5, 1), (7, 1), (3, 2), (5, 2), (7, 2), (3, 3)])
def test_depthwise_conv2d_and_its_derivatives_equal_tensorflows(shape, size, dilation, onednn, monkeypatch):
    """Dilated in the kernel where it dilates (oneDNN), its filter gradient over the dilation's
    phases and a wide kernel's in columns, or by tf.nn (TensorFlow's own kernels): the same
    outputs and first and second derivatives (the input gradient is a depthwise_conv2d itself;
    the dilating kernel's own registered gradient is wrong under oneDNN)."""
    if onednn is False:
        monkeypatch.setattr(layers, "onednn_kernels", lambda: False)
    x = tf.random.normal(shape, seed=1)
    kernel = tf.random.normal([size, size, shape[-1], 1], seed=2)
    assert_same_derivatives(
        lambda x, k: layers.depthwise_conv2d(x, k, dilation),
        lambda x, k: tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "SAME", dilations=[dilation] * 2), x, kernel)


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


@pytest.mark.parametrize("path", ["as chosen here", "block-diagonal"])
@pytest.mark.parametrize("channels, out", [(16, 16), (32, 32), (32, 16)])
def test_grouped_pointwise_and_its_derivatives_equal_one_convolution_per_group(channels, out, path, monkeypatch):
    """Block-diagonal, or oneDNN's grouped convolution with its gradients set by hand (32
    channels a group or more, where oneDNN runs here): each group's own 1x1 convolution, with
    the same first and second derivatives."""
    if path == "block-diagonal":
        monkeypatch.setattr(layers, "onednn_kernels", lambda: False)
    groups = 3
    x = tf.random.normal([2, 6, 5, groups * channels], seed=6)
    kernel = tf.random.normal([groups, channels, out], seed=7)

    def per_group(x, kernel):
        return tf.concat([tf.nn.conv2d(x_g, k_g[None, None], 1, "SAME")
                          for x_g, k_g in zip(tf.split(x, groups, axis=-1), tf.unstack(kernel))], axis=-1)
    assert_same_derivatives(layers.grouped_pointwise, per_group, x, kernel)
