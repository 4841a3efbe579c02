"""Parameters, non-zero parameters, dense and sparse multiply-accumulates (MACs) of a model.

Conventions (those of the papers whose figures the tests check against):
* MACs are per image and count convolutions (any stride, dilation or groups), depthwise
  convolutions and dense layers: every kernel entry is used once per output position.
  Sparse MACs count only the uses of non-zero kernel entries. BatchNorm (folded into the
  preceding convolution at inference), pooling, activations and additions cost no MACs.
* Parameters are what a model learns: kernels, biases and BatchNorm's scale and offset.
  BatchNorm's running statistics and the pruning masks are bookkeeping, not parameters.
"""
import dataclasses
import math

import numpy as np
import tf_keras as keras

from scas_tf import pruning
from scas_tf.errors import ScasError

# Kernel attribute names per layer class, checked in order (subclasses match their parent).
KERNELS = (
    (keras.layers.SeparableConv2D, "separable", ("depthwise_kernel", "pointwise_kernel")),
    (keras.layers.DepthwiseConv2D, "depthwise", ("depthwise_kernel",)),
    (keras.layers.Conv2D, "conv", ("kernel",)),
    (keras.layers.Dense, "dense", ("kernel",)),
)
POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
           keras.layers.GlobalMaxPooling2D, keras.layers.GlobalAveragePooling2D)


@dataclasses.dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str
    params: int
    nonzero_params: int
    kernel_params: int  # the prunable part of params
    nonzero_kernel_params: int
    macs: int
    sparse_macs: int


def weighted_layer_cost(name, kind, kernels, other_params, positions):
    """Cost of a layer whose kernels' entries are each used once at `positions` outputs."""
    kernel_params = sum(k.size for k in kernels)
    nonzero_kernel = sum(int(np.count_nonzero(k)) for k in kernels)
    nonzero_other = sum(int(np.count_nonzero(p)) for p in other_params)
    return LayerCost(
        name, kind,
        params=kernel_params + sum(p.size for p in other_params),
        nonzero_params=nonzero_kernel + nonzero_other,
        kernel_params=kernel_params, nonzero_kernel_params=nonzero_kernel,
        macs=kernel_params * positions, sparse_macs=nonzero_kernel * positions)


def free_layer_cost(name, kind, params):
    """Cost of a layer with no MACs (BatchNorm, pooling, activations, merges)."""
    return LayerCost(name, kind, params=sum(p.size for p in params),
                     nonzero_params=sum(int(np.count_nonzero(p)) for p in params),
                     kernel_params=0, nonzero_kernel_params=0, macs=0, sparse_macs=0)


def layer_cost(layer, output_shape):
    """Cost of one (unwrapped) Keras layer, given its output shape (shapes, for a layer of
    several outputs: a split, which has no weights)."""
    for cls, kind, kernel_names in KERNELS:
        if isinstance(layer, cls):
            kernels = [getattr(layer, n).numpy() for n in kernel_names]
            bias = [layer.bias.numpy()] if getattr(layer, "bias", None) is not None else []
            positions = math.prod(output_shape[1:-1])  # 1 for a dense layer on a vector
            return weighted_layer_cost(layer.name, kind, kernels, bias, positions)
    if isinstance(layer, pruning.StackedKernels):
        kernels = [w.numpy() for w in layer.get_prunable_weights()]
        return weighted_layer_cost(layer.name, "stacked", kernels, [], layer.kernel_positions)
    if isinstance(layer, keras.layers.BatchNormalization):
        return free_layer_cost(layer.name, "batchnorm", [w.numpy() for w in (layer.gamma, layer.beta) if w is not None])
    if layer.trainable_weights:
        raise ScasError(f"accounting does not know layer type {type(layer).__name__} ({layer.name})")
    return free_layer_cost(layer.name, "pool" if isinstance(layer, POOLING) else "other", [])


def leaf_layers(model):
    """(layer, output_shape) for every layer of a functional model, nested models expanded."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        elif isinstance(layer, pruning.PruneLowMagnitude):
            yield layer.layer, layer.output_shape
        else:
            yield layer, layer.output_shape


@dataclasses.dataclass(frozen=True)
class ModelCost:
    layers: tuple

    def total(self, field):
        return sum(getattr(c, field) for c in self.layers)

    def summary(self):
        """The figures a results file reports."""
        kernels, nonzero_kernels = self.total("kernel_params"), self.total("nonzero_kernel_params")
        return {
            "params": self.total("params"),
            "nonzero_params": self.total("nonzero_params"),
            "prunable_params": kernels,
            "nonzero_prunable_params": nonzero_kernels,
            "weight_sparsity": 1.0 - nonzero_kernels / kernels if kernels else 0.0,
            "dense_macs": self.total("macs"),
            "sparse_macs": self.total("sparse_macs"),
        }


def model_cost(model):
    """Per-layer and total cost of a functional Keras model (pruning wrappers see through)."""
    return ModelCost(tuple(layer_cost(layer, shape) for layer, shape in leaf_layers(model)))
