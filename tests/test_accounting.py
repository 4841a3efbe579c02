"""Parameter and MAC counts: hand-computed layers, then published figures of known networks."""
import numpy as np
import pytest
import tf_keras as keras

from scas_tf import accounting, data, pruning
from scas_tf.models import build_baseline


def cost_of(layer_fn, input_shape):
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layer_fn(inputs))
    return accounting.model_cost(model)


def test_conv_dilated_depthwise_dense_bn_pool_by_hand():
    def net(x):
        x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(x)  # 8x8 -> 4x4
        x = keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same", use_bias=False, name="dilated")(x)
        x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.MaxPooling2D(name="pool")(x)  # 4x4 -> 2x2
        x = keras.layers.Flatten()(x)
        return keras.layers.Dense(10, name="dense")(x)

    costs = {c.name: c for c in cost_of(net, (8, 8, 3)).layers}
    assert (costs["conv"].params, costs["conv"].macs) == (3 * 3 * 3 * 4 + 4, 3 * 3 * 3 * 4 * 16)
    assert (costs["dilated"].params, costs["dilated"].macs) == (3 * 3 * 4 * 4, 3 * 3 * 4 * 4 * 16)
    assert (costs["depthwise"].params, costs["depthwise"].macs) == (3 * 3 * 4 + 4, 3 * 3 * 4 * 16)
    assert (costs["bn"].params, costs["bn"].macs, costs["bn"].kernel_params) == (8, 0, 0)  # no running stats
    assert (costs["pool"].params, costs["pool"].macs, costs["pool"].kind) == (0, 0, "pool")
    assert (costs["dense"].params, costs["dense"].macs) == (16 * 10 + 10, 16 * 10)


def test_sparse_macs_count_only_nonzero_kernel_entries():
    inputs = keras.Input((6, 6, 2))
    layer = pruning.prunable(keras.layers.Conv2D(3, 3, padding="same", use_bias=False))
    model = keras.Model(inputs, layer(inputs))
    kernel = np.zeros((3, 3, 2, 3), np.float32)
    kernel[1, 1, :, :] = 1.0  # 6 non-zero entries, each used at 36 positions
    layer.layer.kernel.assign(kernel)
    summary = accounting.model_cost(model).summary()
    assert summary["dense_macs"] == 54 * 36 and summary["sparse_macs"] == 6 * 36
    assert summary["prunable_params"] == 54 and summary["nonzero_prunable_params"] == 6
    assert summary["weight_sparsity"] == pytest.approx(1 - 6 / 54)


# Published figures: Howard et al. 2017 (MobileNet 1.0-224, Table 8: 4.2M params, 569M
# mult-adds); He et al. 2016 (ResNet-50: 25.6M params in torchvision/Keras, 3.8e9 FLOPs =
# multiply-adds, Table 1; CIFAR ResNet-20/56: 0.27M / 0.85M params, Table 6).
@pytest.mark.parametrize("builder, params, macs, rtol", [
    (lambda: keras.applications.MobileNet(weights=None), 4.2e6, 569e6, 0.01),
    (lambda: keras.applications.ResNet50(weights=None), 25.6e6, 3.8e9, 0.02),
])
def test_imagenet_networks_match_published_figures(builder, params, macs, rtol):
    summary = accounting.model_cost(builder()).summary()
    assert summary["params"] == pytest.approx(params, rel=rtol)
    assert summary["dense_macs"] == pytest.approx(macs, rel=rtol)


@pytest.mark.parametrize("arch, params", [("resnet20", 0.27e6), ("resnet56", 0.85e6)])
def test_cifar_resnets_match_published_sizes(arch, params):
    model = build_baseline(arch, data.dataset_info("cifar10"))
    assert accounting.model_cost(model).summary()["params"] == pytest.approx(params, rel=0.01)
