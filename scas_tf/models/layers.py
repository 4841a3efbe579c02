"""Prunable building blocks shared by every model builder (functional Keras API).

Every convolution and dense kernel is wrapped by `pruning.prunable`; separable and dilated
convolutions are a prunable depthwise convolution followed by a prunable 1x1 convolution, so
no weight escapes pruning.
"""
import tf_keras as keras

from scas_tf import pruning

CONV_INIT = "he_normal"


def conv(x, filters, kernel_size, strides=1, dilation_rate=1, name=None):
    """A prunable bias-free convolution (a BatchNorm always follows)."""
    layer = keras.layers.Conv2D(filters, kernel_size, strides=strides, dilation_rate=dilation_rate,
                                padding="same", use_bias=False, kernel_initializer=CONV_INIT, name=name)
    return pruning.prunable(layer)(x)


def depthwise_conv(x, kernel_size, strides=1, dilation_rate=1, name=None):
    layer = pruning.PrunableDepthwiseConv2D(kernel_size, strides=strides, dilation_rate=dilation_rate,
                                            padding="same", use_bias=False,
                                            depthwise_initializer=CONV_INIT, name=name)
    return pruning.prunable(layer)(x)


def batch_norm(x, affine=True, name=None):
    return keras.layers.BatchNormalization(center=affine, scale=affine, momentum=0.9, epsilon=1e-5,
                                           name=name)(x)


def conv_bn_relu(x, filters, kernel_size, strides=1, name=None):
    x = conv(x, filters, kernel_size, strides, name=name)
    return keras.layers.ReLU()(batch_norm(x))


def separable_conv_bn_relu(x, filters, kernel_size, strides=1, dilation_rate=1, name=None):
    """Depthwise kxk then pointwise 1x1, both pruned, then BN-ReLU."""
    x = depthwise_conv(x, kernel_size, strides, dilation_rate, name=name and name + "_depthwise")
    x = conv(x, filters, 1, name=name and name + "_pointwise")
    return keras.layers.ReLU()(batch_norm(x))


def classifier(x, num_classes, name="classifier"):
    """Global average pooling and a prunable dense layer to logits."""
    x = keras.layers.GlobalAveragePooling2D()(x)
    return pruning.prunable(keras.layers.Dense(num_classes, name=name))(x)
