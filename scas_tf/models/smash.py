"""SMASH networks (reference: ajbrock/SMASH, SMASH.py and layers.py): the HyperNet, the search
network whose 1x1 weights it generates, and the fixed network of one architecture.

Both networks run the same memory-bank bookkeeping (`memory_blocks`); they differ in the op:
* search network (the reference's SMASH net): 1x1 convolution with generated, pruned and
  norm-divided weights -> ReLU -> the block's one learned spatial kernel, sliced to the op's
  channels, kernel size (centred crop), dilation and groups. Stem ReLU, no BN inside ops.
* fixed network (the reference's MainNet, trained from scratch): BN-ReLU-1x1-BN-ReLU-conv
  ("sandwich") with weights of its own. `sandwich=False` builds the search network's op
  instead, which is how the search network is tested.
Stem 7x7; transitions BN-ReLU-1x1-2x2 average pool; head BN-ReLU-global average pool-dense.
The search network's learned weights have the largest shape any architecture needs and each
call uses a slice (the reference's SMASHC2D, SMASHBN2D, SMASHFC); all are pruned by the
`Pruner`, the generated ones by `pruning.prune_tensor`, on one schedule.
"""
import numpy as np
import tensorflow as tf
import tf_keras as keras

from scas_tf import pruning
from scas_tf.errors import ScasError
from scas_tf.models import layers
from scas_tf.spaces.smash import NUM_BLOCKS

STEM_KERNEL = 7
HYPER_GROWTH = 10
HYPER_DEPTHS = (8, 10, 4)  # dense layers per HyperNet block
HYPER_FIRST = 7  # channels of the HyperNet's first convolution
LEAKY_SLOPE = 0.02
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5  # PyTorch's 0.1 / 1e-5 in Keras's convention
CONV_INIT = "orthogonal"  # the reference's, in both networks and the HyperNet


def memory_blocks(x, arch, op, transition):
    """Runs the blocks of `arch` on the stem's output x: op(block, index, spec, inputs) gives
    an op's G*N output channels, transition(block, x) the next block's input."""
    space = arch.space
    for b, block in enumerate(arch.blocks):
        bank = block.bank_size * space.N
        banks = channel_chunks(x, bank, space.initial_banks(b, block.bank_size))
        for i, spec in enumerate(block.ops):
            reads = [banks[r] for r in spec.reads]
            out = op(b, i, spec, reads[0] if len(reads) == 1 else tf.concat(reads, -1))
            chunks = channel_chunks(out, bank, spec.units // block.bank_size)
            for j, w in enumerate(spec.writes):
                chunk = chunks[j % len(chunks)]
                if w == len(banks):
                    banks.append(chunk)
                else:
                    banks[w] = banks[w] + chunk
        x = banks[0] if len(banks) == 1 else tf.concat(banks, -1)
        if b < NUM_BLOCKS - 1:
            x = transition(b, x)
    return x


def channel_chunks(x, size, count):
    """The first `count` chunks of `size` channels of x (any channels left over are dropped).
    One split, whose gradient is a concat: strided slices of the channel axis have a gradient
    (StridedSliceGrad) several times slower on CPU."""
    rest = x.shape[-1] - size * count
    return tf.split(x, [size] * count + ([rest] if rest else []), axis=-1)[:count]


def op_names(b, i):
    return f"block{b}_op{i}"


# -- the fixed network ------------------------------------------------------------------------

def bn_relu(x, name=None):
    return keras.layers.ReLU()(layers.batch_norm(x, name=name))


def build_smash_model(arch, info, auxiliary=False, drop_path=0.0, dropout=0.0, sandwich=True):
    """The functional Keras model of a SMASH architecture (every kernel prunable)."""
    if auxiliary or drop_path:
        raise ScasError("SMASH networks have no auxiliary head or drop-path")
    space = arch.space
    inputs = keras.Input(info.image_shape)
    x = layers.conv(inputs, space.in_channels[0], STEM_KERNEL, name="stem", initializer=CONV_INIT)
    if not sandwich:
        x = keras.layers.ReLU()(x)

    def op(b, i, spec, x):
        name = op_names(b, i)
        if sandwich:
            x = bn_relu(x, f"{name}_bn1")
        x = layers.conv(x, space.bottleneck_units(x.shape[-1], spec.units), 1, name=f"{name}_1x1",
                        initializer=CONV_INIT)
        x = bn_relu(x, f"{name}_bn2") if sandwich else keras.layers.ReLU()(x)
        conv = layers.GroupedConv2D(spec.units * space.N, spec.kernel, dilation_rate=spec.dilation,
                                    groups=spec.groups, padding="same", use_bias=False,
                                    kernel_initializer=CONV_INIT, name=f"{name}_conv")
        return pruning.prunable(conv)(x)

    def transition(b, x):
        x = bn_relu(x, f"transition{b}_bn")
        x = layers.conv(x, space.in_channels[b + 1], 1, name=f"transition{b}_1x1", initializer=CONV_INIT)
        return keras.layers.AveragePooling2D(2)(x)

    x = bn_relu(memory_blocks(x, arch, op, transition), "head_bn")
    return keras.Model(inputs, layers.classifier(x, info.num_classes, dropout), name="smash")


# -- the search network -----------------------------------------------------------------------

class SlicedConv(keras.layers.Layer, pruning.tfmot_sparsity.PrunableLayer):
    """A convolution kernel of the largest shape any op needs (kh, kw, in, out), shared by
    every call: each uses its first `filters` outputs, the first in/groups inputs and the
    centred kernel_size crop (the reference's SMASHC2D)."""

    def __init__(self, kernel_shape, **kwargs):
        super().__init__(**kwargs)
        self.kernel_shape = tuple(kernel_shape)

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", self.kernel_shape, initializer=CONV_INIT)
        super().build(input_shape)

    def sliced(self, in_channels, filters, kernel_size):
        (kh, kw), (max_h, max_w) = kernel_size, self.kernel_shape[:2]
        top, left = (max_h - kh) // 2, (max_w - kw) // 2
        return self.kernel[top:top + kh, left:left + kw, :in_channels, :filters]

    def call(self, x, filters=None, kernel_size=(1, 1), dilation=(1, 1), groups=1):
        kernel = self.sliced(x.shape[-1] // groups, filters or self.kernel_shape[-1], kernel_size)
        return layers.grouped_convolution(x, kernel, dilation, groups)

    def get_prunable_weights(self):
        return [self.kernel]


class SlicedDense(keras.layers.Layer, pruning.tfmot_sparsity.PrunableLayer):
    """A dense layer for up to max_inputs features; a call uses the first rows (SMASHFC)."""

    def __init__(self, max_inputs, units, **kwargs):
        super().__init__(**kwargs)
        self.max_inputs, self.units = max_inputs, units

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", (self.max_inputs, self.units), initializer="glorot_uniform")
        self.bias = self.add_weight("bias", (self.units,), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        return x @ self.kernel[:x.shape[-1]] + self.bias

    def get_prunable_weights(self):
        return [self.kernel]


class SlicedBatchNorm(keras.layers.Layer):
    """BatchNorm over up to max_channels channels; a call normalises and (in training) updates
    the statistics of the first x.shape[-1] of them (SMASHBN2D)."""

    def __init__(self, max_channels, **kwargs):
        super().__init__(**kwargs)
        self.max_channels = max_channels

    def build(self, input_shape):
        shape = (self.max_channels,)
        self.gamma = self.add_weight("gamma", shape, initializer="ones")
        self.beta = self.add_weight("beta", shape, initializer="zeros")
        stats = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.MEAN)
        self.moving_mean = self.add_weight("moving_mean", shape, initializer="zeros", **stats)
        self.moving_variance = self.add_weight("moving_variance", shape, initializer="ones", **stats)
        super().build(input_shape)

    def call(self, x, training=None):
        c = x.shape[-1]
        if training:
            mean, variance = tf.nn.moments(x, [0, 1, 2])
            for moving, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
                updated = moving[:c] * BN_MOMENTUM + value * (1.0 - BN_MOMENTUM)
                moving.assign(tf.concat([updated, moving[c:]], 0))
        else:
            mean, variance = self.moving_mean[:c], self.moving_variance[:c]
        return tf.nn.batch_normalization(x, mean, variance, self.beta[:c], self.gamma[:c], BN_EPSILON)


class WeightNormConv(keras.layers.Layer):
    """A bias-free "same" convolution whose kernel is divided by its Frobenius norm (the
    reference's simple weight norm, WNC2D)."""

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = filters, kernel_size

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", (self.kernel_size, self.kernel_size, input_shape[-1], self.filters),
                                      initializer=CONV_INIT)
        super().build(input_shape)

    def call(self, x):
        return tf.nn.conv2d(x, self.kernel / tf.norm(self.kernel), 1, "SAME")


class HyperNet(keras.Model):
    """The reference's DenseNet-like, weight-normalised, fully convolutional HyperNet: a 3x3
    convolution to 7 channels (concatenated), then dense blocks of 8, 10 and 4 LeakyReLU-conv
    layers adding 10 channels each, the first two followed by a 3x3 transition halving the
    channels, the last by a 1x1 convolution to `out_channels`. No BN, no bias, no downsampling."""

    def __init__(self, out_channels, **kwargs):
        super().__init__(**kwargs)
        self.first = WeightNormConv(HYPER_FIRST, 3)
        self.dense = [[WeightNormConv(HYPER_GROWTH, 3) for _ in range(depth)] for depth in HYPER_DEPTHS]
        self.out_channels = out_channels
        self.transitions = None

    def build(self, input_shape):
        channels = input_shape[-1] + HYPER_FIRST
        self.transitions = []
        for block, depth in enumerate(HYPER_DEPTHS):
            channels += depth * HYPER_GROWTH
            last = block == len(HYPER_DEPTHS) - 1
            self.transitions.append(WeightNormConv(self.out_channels, 1) if last else WeightNormConv(channels // 2, 3))
            channels //= 2
        super().build(input_shape)

    def call(self, x):
        x = tf.concat([x, self.first(x)], -1)
        for convs, transition in zip(self.dense, self.transitions):
            for conv in convs:
                x = tf.concat([x, conv(tf.nn.leaky_relu(x, LEAKY_SLOPE))], -1)
            x = transition(tf.nn.leaky_relu(x, LEAKY_SLOPE))
        return x


class SearchNetwork(keras.Model):
    """The HyperNet and the learned weights of the SMASH net, for a space and a dataset.

    `op_kernels` generates (and prunes) every op's 1x1 kernel from the conditioning tensor and
    noise, `forward` runs an architecture with them. The HyperNet runs as one traced function
    for every architecture (its input's width is left open); the rest runs eagerly, since its
    shapes change with every architecture."""

    def __init__(self, space, info, **kwargs):
        super().__init__(**kwargs)
        self.space, self.info = space, info
        self.columns = space.max_bottleneck * space.N_max  # of the generated 1x1 weights
        self.hypernet = HyperNet(space.slice_channels * space.N * space.max_bottleneck, name="hypernet")
        self.stem = pruning.prunable(keras.layers.Conv2D(
            space.in_channels[0], STEM_KERNEL, padding="same", use_bias=False,
            kernel_initializer=CONV_INIT, name="stem"))
        self.spatial = [pruning.prunable(SlicedConv((space.max_kernel, space.max_kernel, self.columns, space.N_max),
                                                    name=f"block{b}_spatial")) for b in range(NUM_BLOCKS)]
        self.transition_bn = [SlicedBatchNorm(space.max_widths[b], name=f"transition{b}_bn")
                              for b in range(NUM_BLOCKS - 1)]
        self.transition_conv = [pruning.prunable(SlicedConv((1, 1, space.max_widths[b], space.in_channels[b + 1]),
                                                            name=f"transition{b}_1x1"))
                                for b in range(NUM_BLOCKS - 1)]
        self.head_bn = SlicedBatchNorm(space.max_widths[-1], name="head_bn")
        self.classifier = pruning.prunable(SlicedDense(space.max_widths[-1], info.num_classes, name="classifier"))
        condition_channels = space.condition_layout["channels"] + 1  # plus the noise channel
        self.generate = tf.function(self.pruned_weights, input_signature=[
            tf.TensorSpec([1, space.k, None, condition_channels], tf.float32),
            tf.TensorSpec([None, self.columns], tf.int32), tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.float32)])
        # Every weight exists from the start (a sliced layer's shape does not depend on its input).
        self.stem.build((None, *info.image_shape))
        for layer in (*self.spatial, *self.transition_conv, self.classifier, *self.transition_bn, self.head_bn):
            layer.build(None)
        self.generated_weights(tf.zeros([1, space.k, 1, condition_channels]))

    @property
    def learned_variables(self):
        """Every trainable variable but the HyperNet's (the reference decays only these)."""
        hyper = {v.ref() for v in self.hypernet.trainable_variables}
        return [v for v in self.trainable_variables if v.ref() not in hyper]

    def generated_weights(self, embedding):
        return self.stacked_1x1_weights(self.hypernet(embedding))

    def stacked_1x1_weights(self, out):
        """The HyperNet's output as the stacked 1x1 weights of all ops: row dc*N*s + v, column
        m*N_max + N*a + u hold output channel (m, u, v) at row a, column s of the embedding
        (the reference's layout for m = 0; m < max_bottleneck adds the columns its search
        network lacked)."""
        space = self.space
        out = tf.reshape(out[0], [space.k, -1, space.max_bottleneck, space.N, space.slice_channels])
        out = tf.transpose(out, [1, 4, 2, 0, 3])  # (slices, dc*N, max_bottleneck, k, N)
        return tf.reshape(out, [-1, self.columns])

    def pruned_weights(self, embedding, segments, num_segments, sparsity):
        """The generated weights with every op's kernel (entries of segment j: op j) pruned to
        `sparsity` on its own and divided by its norm (the reference's simple weight norm);
        entries no op uses are 0. One traced function for every architecture."""
        weights, _ = pruning.prune_segments(self.generated_weights(embedding), segments, num_segments, sparsity)
        ids = tf.where(segments < 0, num_segments, segments)
        norms = tf.sqrt(tf.math.unsorted_segment_sum(tf.square(weights), ids, num_segments + 1))
        return tf.math.divide_no_nan(weights, tf.gather(norms, ids))

    def op_layout(self, arch):
        """Each op's (first row, rows, columns) of the generated weights (rows: its input
        channels, columns: its n_b), and the op (segment) each entry belongs to, -1 if none."""
        layout, row = [], 0
        for b, block in enumerate(arch.blocks):
            for op in block.ops:
                rows = arch.op_input_channels(b, op)
                layout.append((row, rows, self.space.bottleneck_units(rows, op.units)))
                row += rows
        segments = -np.ones((row + self.space.slice_channels, self.columns), np.int32)
        for j, (first, rows, columns) in enumerate(layout):
            segments[first:first + rows, :columns] = j
        return layout, segments

    def op_kernels(self, arch, condition, noise, schedule, step):
        """Every op's 1x1 kernel, in block and op order: its rows of the generated weights and
        first n_b columns, pruned to the schedule's sparsity at `step` (each op's kernel on
        its own, as a layer's; the gradient reaches the HyperNet through the kept entries
        only), then divided by its norm."""
        layout, segments = self.op_layout(arch)
        embedding = tf.concat([noise, condition], -1)[None]
        weights = self.generate(embedding, segments, len(layout), tf.cast(schedule(step)[1], tf.float32))
        return [tf.reshape(weights[row:row + rows, :columns], [1, 1, rows, columns]) for row, rows, columns in layout]

    def forward(self, images, arch, kernels, training=False):
        """Logits of `arch` on images with the given 1x1 kernels (op_kernels')."""
        # The layers' call()s directly: Keras's __call__ costs more than a small convolution
        # here, and the Pruner keeps pruned weights at zero, so no wrapper needs to run.
        space, remaining = self.space, iter(kernels)
        x = tf.nn.relu(self.stem.layer.call(images))

        def op(b, i, spec, x):
            x = tf.nn.relu(tf.nn.conv2d(x, next(remaining), 1, "SAME"))
            return self.spatial[b].layer.call(x, filters=spec.units * space.N, kernel_size=spec.kernel,
                                              dilation=spec.dilation, groups=spec.groups)

        def transition(b, x):
            x = tf.nn.relu(self.transition_bn[b].call(x, training=training))
            return tf.nn.avg_pool2d(self.transition_conv[b].layer.call(x), 2, 2, "VALID")

        x = tf.nn.relu(self.head_bn.call(memory_blocks(x, arch, op, transition), training=training))
        return self.classifier.layer.call(tf.reduce_mean(x, [1, 2]))
