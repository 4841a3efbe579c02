"""Gradual magnitude pruning (Zhu & Gupta 2017) on tfmot, driven by one global step.

Every search method and the trainer prune through this module:

* `prunable(layer)` wraps a Keras layer in tfmot's pruning wrapper (`PruneLowMagnitude`, as
  `MaskedLayer`), which owns the binary masks.
  `PrunableDepthwiseConv2D` makes depthwise kernels prunable too (tfmot leaves them dense), so
  separable convolutions built as depthwise + 1x1 are pruned in full. A `StackedKernels`
  layer holds several layers' kernels in one weight (a supernet's edges run as one op); each
  is still pruned as a layer of its own.
* `Pruner` moves all masks of a model from one global optimiser step through tfmot's
  `PolynomialDecay`. tfmot's wrappers would otherwise each count their own `training=True`
  calls, which drifts under weight sharing (ENAS) and extra forward passes (DARTS); so the
  wrappers (`MaskedLayer`) only hold the masks; the Pruner updates them and zeroes the pruned
  weights after every optimiser step.
* `prune_tensor` is the functional form for weights that are tensors, not variables
  (SMASH's generated weights), on the same schedule object; `prune_segments` prunes several
  such weights held in one tensor at once.
"""
import dataclasses
import inspect

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
# tfmot does not export its wrapper class; MaskedLayer extends it and find_wrappers needs it.
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from scas_tf.errors import ScasError

tfmot_sparsity = tfmot.sparsity.keras


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """Zhu & Gupta's schedule: s_t = s_f + (s_i - s_f)(1 - (t - begin)/(end - begin))^power."""
    target_sparsity: float
    begin_step: int = 0
    end_step: int = 1000
    frequency: int = 100
    initial_sparsity: float = 0.0
    power: int = 3

    def __post_init__(self):
        for name in ("target_sparsity", "initial_sparsity"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ScasError(f"{name} must be in [0, 1), got {value}")
        if not 0 <= self.begin_step < self.end_step:
            raise ScasError(f"pruning needs 0 <= begin_step < end_step, got {self.begin_step}, {self.end_step}")
        if self.frequency < 1:
            raise ScasError(f"pruning frequency must be >= 1 step, got {self.frequency}")

    def schedule(self):
        return tfmot_sparsity.PolynomialDecay(
            initial_sparsity=self.initial_sparsity, final_sparsity=self.target_sparsity,
            begin_step=self.begin_step, end_step=self.end_step, power=self.power,
            frequency=self.frequency)


def gradual_config(target_sparsity, total_steps, begin_fraction, end_fraction, frequency=0):
    """A schedule over fractions of a run: frequency 0 means about 50 mask updates in all.

    The window is a whole number of update intervals, so the last update hits the target; a
    frequency longer than the window is clamped to it (one update, at the window's end), so
    that the schedule can never end after the run and leave the target unreached.
    """
    begin = int(begin_fraction * total_steps)
    span = max(1, int(end_fraction * total_steps) - begin)
    frequency = min(frequency or max(1, span // 50), span)
    end = begin + frequency * (span // frequency)
    return PruningConfig(target_sparsity, begin, end, frequency)


class PrunableDepthwiseConv2D(keras.layers.DepthwiseConv2D, tfmot_sparsity.PrunableLayer):
    """DepthwiseConv2D whose kernel tfmot prunes (its registry prunes nothing of depthwise)."""

    def get_prunable_weights(self):
        return [self.depthwise_kernel]


class StackedKernels(tfmot_sparsity.PrunableLayer):
    """A prunable layer whose prunable weights each stack several kernels on axis 0 (e.g. the
    edges of a supernet computed as one op). Each kernel is pruned on its own, as the kernel of
    a layer of its own would be; the wrapper's threshold is the smallest of theirs.
    `kernel_positions`: the output positions at which each kernel entry is used (for MACs)."""

    kernel_positions = None


class MaskedLayer(PruneLowMagnitude):
    """tfmot's pruning wrapper as the holder of a layer's masks, not their driver.

    tfmot's wrapper counts its `training=True` calls, may update its masks on each, and
    multiplies the weights by their masks in every call. Here the Pruner moves every mask from
    the global step and zeroes pruned weights right after every optimiser step (its
    `update_masks`), so a forward pass is just the wrapped layer's: no counter, no
    conditional, no mask assignment per call. That matters in a supernet, whose hundreds of
    kernels would otherwise add four ops each to every forward pass of every training graph.
    """

    def call(self, inputs, training=None, **kwargs):
        if "training" in inspect.signature(self.layer.call).parameters:
            kwargs["training"] = training
        return self.layer.call(inputs, **kwargs)


def prunable(layer):
    """Wraps `layer` so that its kernel is masked; a `Pruner` decides the masks."""
    # The schedule is tfmot's required argument but never consulted: no training-mode call.
    return MaskedLayer(layer, pruning_schedule=tfmot_sparsity.ConstantSparsity(0.0, 0))


def magnitude_mask(weights, sparsity):
    """Binary mask keeping the round(n * (1 - sparsity)) largest-magnitude entries (at least 1).

    Exactly that many survive even when magnitudes tie (e.g. at zero), unlike a threshold test.
    Returns (mask, threshold), threshold being the smallest kept magnitude.
    """
    masks, thresholds = magnitude_masks(weights[None], sparsity)
    return masks[0], thresholds[0]


def magnitude_masks(weights, sparsity):
    """magnitude_mask of each weights[i] (same shapes stacked on axis 0), in one top_k."""
    count = tf.shape(weights)[0]
    magnitudes = tf.reshape(tf.abs(weights), [count, -1])
    size = tf.shape(magnitudes)[1]
    keep = tf.maximum(1, tf.cast(tf.round(tf.cast(size, tf.float32) * (1.0 - sparsity)), tf.int32))
    values, order = tf.math.top_k(magnitudes, k=size)
    rows = tf.broadcast_to(tf.range(count)[:, None], [count, keep])
    kept = tf.scatter_nd(tf.stack([rows, order[:, :keep]], axis=-1), tf.ones([count, keep], weights.dtype),
                         [count, size])
    return tf.reshape(kept, tf.shape(weights)), values[:, keep - 1]


def prune_tensor(weights, schedule, step):
    """Functional pruning of a weight tensor to the schedule's sparsity at `step`.

    The mask is recomputed on every call (generated weights change every step) and carries
    no gradient, so pruned entries pass none back to whatever generated them.
    """
    mask, _ = magnitude_mask(weights, schedule(step)[1])
    return weights * tf.stop_gradient(mask)


def prune_segments(weights, segments, num_segments, sparsity):
    """`prune_tensor` of several weights held in one tensor, in one pass of fixed ops (so that a
    traced function serves any layout): segments[i] (same shape as weights) says which weight
    entry i belongs to (-1: none; such entries become 0). Each weight keeps exactly
    round(n(1 - sparsity)) (at least 1) largest-magnitude entries, ties broken as top_k breaks
    them, so the masks are prune_tensor's of each weight on its own. Returns (pruned weights,
    mask); the mask carries no gradient."""
    flat, ids = tf.reshape(weights, [-1]), tf.reshape(segments, [-1])
    ids = tf.where(ids < 0, num_segments, ids)  # unused entries form a last segment, never kept
    by_magnitude = tf.argsort(-tf.abs(flat), stable=True)
    order = tf.gather(by_magnitude, tf.argsort(tf.gather(ids, by_magnitude), stable=True))
    sorted_ids = tf.gather(ids, order)
    sizes = tf.math.unsorted_segment_sum(tf.ones_like(ids), ids, num_segments + 1)
    starts = tf.cumsum(sizes, exclusive=True)
    keep = tf.maximum(1, tf.cast(tf.round(tf.cast(sizes, tf.float32) * (1.0 - sparsity)), tf.int32))
    rank = tf.range(tf.size(ids)) - tf.gather(starts, sorted_ids)
    kept = (rank < tf.gather(keep, sorted_ids)) & (sorted_ids < num_segments)
    mask = tf.scatter_nd(order[:, None], tf.cast(kept, weights.dtype), tf.shape(flat))
    mask = tf.stop_gradient(tf.reshape(mask, tf.shape(weights)))
    return weights * mask, mask


def find_wrappers(module):
    """Every pruning wrapper inside a model or layer, however deeply nested."""
    candidates = [module, *module.submodules]
    return [m for m in candidates if isinstance(m, PruneLowMagnitude)]


@dataclasses.dataclass
class WeightSparsity:
    name: str
    size: int
    nonzero: int

    @property
    def sparsity(self):
        return 1.0 - self.nonzero / self.size


class Pruner:
    """Moves every mask in a (built) model from one global step, through one tfmot schedule."""

    def __init__(self, model, config):
        self.config = config
        self.schedule = config.schedule()
        wrappers = find_wrappers(model)
        if any(not w.built for w in wrappers):
            raise ValueError("build the model (call it once) before creating its Pruner")
        self.pruning_vars = [v for w in wrappers for v in w.pruning_vars]
        self._mask_by_weight = {weight.ref(): mask for weight, mask, _ in self.pruning_vars}
        # Kernels of one shape get their masks from one batched top_k: a supernet has hundreds
        # of kernels but few shapes, and one op per kernel would swell every training graph.
        # A stacked weight contributes its kernels (rows), any other weight itself.
        self._same_shape = {}
        for wrapper in wrappers:
            stacked = isinstance(wrapper.layer, StackedKernels)
            for weight, mask, threshold in wrapper.pruning_vars:
                kernel_shape = tuple(weight.shape[1:] if stacked else weight.shape)
                rows = weight.shape[0] if stacked else None
                self._same_shape.setdefault(kernel_shape, []).append((weight, mask, threshold, rows))

    def sparsity_at(self, step):
        return self.schedule(step)[1]

    def update_masks(self, step):
        """The pruning step: recompute masks if the schedule says so at `step`, then apply them.

        Call it after each optimiser step, in cross-replica context under a strategy.
        """
        should_prune, sparsity = self.schedule(step)

        def recompute_masks():
            updates = []
            for group in self._same_shape.values():
                kernels = tf.concat([weight if rows else weight[None] for weight, _, _, rows in group], 0)
                masks, thresholds = magnitude_masks(kernels, sparsity)
                sizes = [rows or 1 for *_, rows in group]
                for (weight, mask, threshold, _), new_mask, new_thresholds in zip(
                        group, tf.split(masks, sizes), tf.split(thresholds, sizes)):
                    updates += [mask.assign(tf.reshape(new_mask, weight.shape)),
                                threshold.assign(tf.reduce_min(new_thresholds))]
            return tf.group(updates)

        with tf.control_dependencies([tf.cond(should_prune, recompute_masks, tf.no_op)]):
            return self.apply_masks()

    def apply_masks(self):
        """Zeroes pruned weights (the optimiser may have moved them)."""
        return tf.group([weight.assign(weight * mask) for weight, mask, _ in self.pruning_vars])

    def mask_gradients(self, gradients, variables):
        """Blocks the gradient of every pruned weight, so momentum and decay never revive it."""
        return [g * self._mask_by_weight[v.ref()] if g is not None and v.ref() in self._mask_by_weight
                else g for g, v in zip(gradients, variables)]

    def sparsity(self):
        """overall_sparsity of the weights as they are now."""
        return overall_sparsity(self.report())

    def report(self):
        """Per prunable weight: size and non-zeros, read from the weights themselves."""
        return [WeightSparsity(weight.name.removesuffix(":0"), int(tf.size(weight)),
                               int(tf.math.count_nonzero(weight)))
                for weight, _, _ in self.pruning_vars]


def overall_sparsity(report):
    """Sparsity over all prunable weights together (every kernel counted, depthwise included)."""
    size = sum(w.size for w in report)
    return 1.0 - sum(w.nonzero for w in report) / size if size else 0.0


def strip(model):
    """A copy of a functional model without pruning wrappers, for export."""
    return tfmot_sparsity.strip_pruning(model)
