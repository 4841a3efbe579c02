"""Hand-designed CNNs that `scas train --arch=NAME` trains under a sparsity target.

Each builder takes the dataset's DatasetInfo and returns a functional Keras model whose
kernels are all prunable.
"""
import tensorflow as tf
import tf_keras as keras

from scas_tf.errors import ScasError
from scas_tf.models import layers


def small_cnn(info):
    """A compact CNN for MNIST-sized inputs with plain and separable convolutions (~0.2M
    parameters, 39M MACs on 28x28); about 99.3% on MNIST at 90% sparsity."""
    inputs = keras.Input(info.image_shape)
    x = layers.conv_bn_relu(inputs, 32, 3)
    x = layers.conv_bn_relu(x, 64, 3)
    x = keras.layers.MaxPooling2D()(x)
    x = layers.conv_bn_relu(x, 128, 3)
    x = layers.separable_conv_bn_relu(x, 256, 3)
    x = keras.layers.MaxPooling2D()(x)
    x = layers.separable_conv_bn_relu(x, 256, 3)
    return keras.Model(inputs, layers.classifier(x, info.num_classes), name="small_cnn")


class ZeroPadShortcut(keras.layers.Layer):
    """ResNet option-A shortcut: subsample spatially and zero-pad channels (no parameters)."""

    def __init__(self, out_channels, strides, **kwargs):
        super().__init__(**kwargs)
        self.out_channels, self.strides = out_channels, strides

    def call(self, x):
        x = x[:, ::self.strides, ::self.strides, :]
        extra = self.out_channels - x.shape[-1]
        return tf.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "strides": self.strides}


def basic_block(x, filters, strides):
    shortcut = x if strides == 1 and x.shape[-1] == filters else ZeroPadShortcut(filters, strides)(x)
    y = layers.conv_bn_relu(x, filters, 3, strides)
    y = layers.batch_norm(layers.conv(y, filters, 3))
    return keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))


def resnet(info, blocks_per_stage, name):
    """The CIFAR ResNets of He et al. 2016 (sec. 4.2): 16/32/64 filters, option-A shortcuts."""
    inputs = keras.Input(info.image_shape)
    x = layers.conv_bn_relu(inputs, 16, 3)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks_per_stage):
            x = basic_block(x, filters, strides=2 if stage > 0 and block == 0 else 1)
    return keras.Model(inputs, layers.classifier(x, info.num_classes), name=name)


ARCHITECTURES = {
    "small_cnn": small_cnn,
    "resnet20": lambda info: resnet(info, 3, "resnet20"),
    "resnet56": lambda info: resnet(info, 9, "resnet56"),
}


def build_baseline(name, info):
    if name not in ARCHITECTURES:
        raise ScasError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](info)
