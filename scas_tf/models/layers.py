"""Prunable building blocks shared by every model builder (functional Keras API).

Every convolution and dense kernel is wrapped by `pruning.prunable`; separable and dilated
convolutions are a prunable depthwise convolution followed by a prunable 1x1 convolution, so
no weight escapes pruning.
"""
import functools

import tensorflow as tf
import tf_keras as keras

from scas_tf import pruning

CONV_INIT = "he_normal"


def conv(x, filters, kernel_size, strides=1, dilation_rate=1, padding="same", name=None, initializer=CONV_INIT):
    """A prunable bias-free convolution (a BatchNorm always follows)."""
    layer = keras.layers.Conv2D(filters, kernel_size, strides=strides, dilation_rate=dilation_rate,
                                padding=padding, use_bias=False, kernel_initializer=initializer, name=name)
    return pruning.prunable(layer)(x)


@functools.cache
def native_grouped_convolutions():
    """Whether grouped convolutions run as one op: on GPUs and TPUs. On CPUs TensorFlow either
    cannot differentiate one (oneDNN off, as on CPUs without AVX-512) or, with oneDNN, ran the
    gradients of those inside a network through XLA-compiled convolutions: a SMASH final
    network's training step took 1.11 s at batch 128 that way against 0.97 s with one
    convolution per group, and 28.5 s against 1.86 s beside another job (Intel Xeon with
    AVX-512, 2 cores). (Forcing oneDNN on where TensorFlow leaves it off is no way out
    either: there it computed wrong filter gradients for stride-2 1x1 convolutions, the
    factorized reductions'.)"""
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))


def grouped_convolution(x, kernel, dilation=(1, 1), groups=1):
    """A stride-1 "same" convolution with `groups` groups (kernel: kh, kw, in/groups, out), as
    one grouped op on accelerators, else as one convolution per group."""
    if groups == 1 or native_grouped_convolutions():
        return tf.nn.convolution(x, kernel, padding="SAME", dilations=dilation)
    outputs = [tf.nn.convolution(x_g, k_g, padding="SAME", dilations=dilation)
               for x_g, k_g in zip(tf.split(x, groups, axis=-1), tf.split(kernel, groups, axis=-1))]
    return tf.concat(outputs, axis=-1)


def grouped_pointwise(x, kernel):
    """A grouped 1x1 convolution: group g's kernel[g] (channels x out) on x's g-th block of
    channels, output blocks in group order. One grouped op on accelerators. On CPUs, which
    differentiate one slowly (XLA) or not at all, a dense convolution with the block-diagonal
    kernel: groups times the FLOPs, but no split or concat or their gradients' slices (a DARTS
    search step ran 1.18x faster with it than with split, one convolution per group and concat,
    at 5 cells). Where oneDNN runs convolutions and groups are 32 channels or more, it runs its
    grouped convolution, whose gradients are set here: one op on [64, h, w, 4 groups x C],
    forward and input gradient, 1.46 against 2.63 ms (C=32, 16x16) and 1.12 against 2.94 ms
    (C=64, 8x8), but 4.50 against 3.48 ms at C=16 (32x32)."""
    groups, channels, out = kernel.shape
    grouped = tf.reshape(tf.transpose(kernel, [1, 0, 2]), [1, 1, channels, groups * out])
    if native_grouped_convolutions():
        return tf.nn.conv2d(x, grouped, 1, "SAME")
    dense_shape = [1, 1, groups * channels, groups * out]
    if channels < 32 or not onednn_kernels():
        return tf.nn.conv2d(x, tf.reshape(tf.einsum("gco,gh->gcho", kernel, tf.eye(groups)), dense_shape), 1, "SAME")

    @tf.custom_gradient
    def convolve(x, kernel):
        def gradients(dy):
            transposed = tf.reshape(tf.transpose(kernel, [2, 0, 1]), [1, 1, out, groups * channels])
            dense = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=dense_shape, out_backprop=dy,
                                                    strides=[1, 1, 1, 1], padding="SAME")
            diagonal = tf.einsum("gcho,gh->gco", tf.reshape(dense, [groups, channels, groups, out]), tf.eye(groups))
            return tf.nn.conv2d(dy, transposed, 1, "SAME"), diagonal
        return tf.nn.conv2d(x, grouped, 1, "SAME"), gradients
    return convolve(x, kernel)


def depthwise_conv2d(x, kernel, dilation=1):
    """tf.nn.depthwise_conv2d at stride 1 with "same" padding (kernel [k, k, channels, 1], k
    odd), its gradients fast on oneDNN's CPU kernels. tf.nn dilates by space-to-batch,
    convolution and batch-to-space, and its gradients repeat the round trip; oneDNN's kernel
    dilates by itself, so there a dilated one runs in it, its input gradient as the same
    convolution of the output gradient with the kernel flipped. (TensorFlow's own gradients of
    the dilating kernel come out wrong under oneDNN.) Its filter gradient is
    `depthwise_filter_gradient`, which undilated kernels wider than 3 take too. One dilated op
    on [64, 32, 32, 64], forward and gradients (2026-11-27): 3x3 16.6 against 25.4 ms, 5x5 45.2
    against 60.8 ms; with the input gradient alone 8.5 against 24.8 ms and 8.0 against 27.9 ms."""
    size = kernel.shape[0]
    if (dilation == 1 and size <= 3) or native_grouped_convolutions() or not onednn_kernels():
        return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME", dilations=[dilation] * 2)

    @tf.custom_gradient
    def convolve(x, kernel):
        def gradients(dy):
            return (depthwise_conv2d(dy, tf.reverse(kernel, [0, 1]), dilation),
                    depthwise_filter_gradient(x, dy, size, dilation))
        return tf.raw_ops.DepthwiseConv2dNative(input=x, filter=kernel, strides=[1, 1, 1, 1], padding="SAME",
                                                dilations=[1, dilation, dilation, 1]), gradients
    return convolve(x, kernel)


@functools.cache
def onednn_kernels():
    """Whether this CPU runs convolutions in oneDNN's kernels: whether a depthwise one dilates
    by itself, as oneDNN's does (TensorFlow's own refuses to)."""
    with tf.init_scope(), tf.device("CPU:0"):
        x, kernel = tf.reshape(tf.range(25.0), [1, 5, 5, 1]), tf.reshape(tf.range(9.0), [3, 3, 1, 1])
        try:
            dilated = tf.raw_ops.DepthwiseConv2dNative(input=x, filter=kernel, strides=[1, 1, 1, 1],
                                                       padding="SAME", dilations=[1, 2, 2, 1])
        except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
            return False
        expected = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME", dilations=[2, 2])
        return bool(tf.reduce_all(dilated == expected))


def depthwise_filter_gradient(x, dy, size, dilation=1):
    """d loss / d kernel of a stride-1 "same" depthwise convolution of x (kernel size x size)
    with output gradient dy. A dilated one's is an undilated one's over the dilation's phases
    (space-to-batch of x and of dy, up to whole blocks). oneDNN's depthwise filter-gradient
    kernel takes kernels up to 3 wide; a wider one ran in its generic grouped kernel, 17x the
    time of a 3x3 on [64, 32, 32, 64], and took a fifth of oneDNN's time in a DARTS search pass
    (8 cells, C=16, batch 64; 5x5 ones in columns: 16.2 against 28.7 ms forward and gradients
    undilated, 26.4 against 38.4 ms dilated, on [64, 32, 32, 64]). So the kernel's
    middle three columns come in one size x 3 filter gradient, each other column in a size x 1
    one of dy shifted by the column's offset (x at w + j times dy at w is x at w times dy at w - j)."""
    if dilation > 1:
        blocks = [[0, -(-n // dilation) * dilation - n] for n in x.shape[1:3]]
        x, dy = (tf.space_to_batch(t, [dilation] * 2, blocks) for t in (x, dy))

    def columns(dy, width):
        return tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
            input=x, filter_sizes=[size, width, x.shape[-1], 1], out_backprop=dy, strides=[1, 1, 1, 1],
            padding="SAME")
    if size <= 3:
        return columns(dy, size)
    half = size // 2
    left, right = ([columns(shifted_along_width(dy, j), 1) for j in offsets]
                   for offsets in (range(-half, -1), range(2, half + 1)))
    return tf.concat([*left, columns(dy, 3), *right], axis=1)


def shifted_along_width(t, offset):
    """t with t[:, :, w - offset] at w (zeros from outside t)."""
    before, after = max(offset, 0), max(-offset, 0)
    return tf.pad(t, [[0, 0], [0, 0], [before, after], [0, 0]])[:, :, after:after + t.shape[2]]


class DepthwiseConv2D(pruning.PrunableDepthwiseConv2D):
    """A prunable DepthwiseConv2D whose training passes run `depthwise_conv2d` where it has a
    fast path (dilated, or wider than 3). Inference keeps TensorFlow's own op, which every
    machine runs a saved model's graph with."""

    def call(self, inputs, training=None):
        size = self.kernel_size[0]
        if (training is True and (self.dilation_rate[0] > 1 or size > 3) and size % 2 == 1
                and self.kernel_size[1] == size and self.dilation_rate[1] == self.dilation_rate[0]
                and self.strides == (1, 1) and self.padding == "same" and self.depth_multiplier == 1
                and not self.use_bias and self.activation is keras.activations.linear):
            return depthwise_conv2d(inputs, self.depthwise_kernel, self.dilation_rate[0])
        return super().call(inputs)


class GroupedConv2D(keras.layers.Conv2D, pruning.tfmot_sparsity.PrunableLayer):
    """A prunable stride-1 Conv2D whose groups run through `grouped_convolution`, so that
    they train on every device."""

    def convolution_op(self, inputs, kernel):
        return grouped_convolution(inputs, kernel, self.dilation_rate, self.groups)

    def get_prunable_weights(self):
        return [self.kernel]


def depthwise_conv(x, kernel_size, strides=1, dilation_rate=1, name=None):
    """A prunable depthwise convolution; strided and dilated at once (which TF's kernels do not
    support) when the stride divides the dilation: subsampling first, then the dilation over
    the stride, computes exactly PyTorch's strided dilated convolution with "same" padding."""
    if strides > 1 and dilation_rate > 1:
        if dilation_rate % strides:
            raise ValueError(f"dilation {dilation_rate} is not a multiple of stride {strides}")
        x = keras.layers.MaxPooling2D(1, strides=strides)(x)  # a 1x1 pool subsamples
        strides, dilation_rate = 1, dilation_rate // strides
    layer = DepthwiseConv2D(kernel_size, strides=strides, dilation_rate=dilation_rate,
                            padding="same", use_bias=False, depthwise_initializer=CONV_INIT, name=name)
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


def classifier(x, num_classes, dropout=0.0, name="classifier"):
    """Global average pooling, optional dropout and a prunable dense layer to logits."""
    x = keras.layers.GlobalAveragePooling2D()(x)
    if dropout:
        x = keras.layers.Dropout(dropout, force_generator=True)(x)
    return pruning.prunable(keras.layers.Dense(num_classes, name=name))(x)


def shifted_by_one(x):
    """x moved up and left by one pixel, zeros in the last row and column (the reference's
    padded x[:, :, 1:, 1:]). A slice and a pad, whose gradients are a pad and a slice: the
    strided slice of Keras's cropping layer has a gradient (StridedSliceGrad) that took 15% of
    an ENAS macro child step on CPU, 4x the slice's."""
    height, width = x.shape[1:3]
    return tf.pad(tf.slice(x, [0, 1, 1, 0], [-1, height - 1, width - 1, -1]), [[0, 0], [0, 1], [0, 1], [0, 0]])


def factorized_reduction(x, filters, name=None, norm=batch_norm):
    """Halves height and width without dropping pixels: two stride-2 1x1 convolutions, the
    second on the input shifted by one pixel, concatenated, then BN (ENAS, DARTS). `norm`
    replaces the BN where a weight-sharing supernet normalises differently."""
    half = filters // 2
    path1 = conv(x, half, 1, strides=2, name=name and name + "_path1")
    path2 = conv(shifted_by_one(x), filters - half, 1, strides=2, name=name and name + "_path2")
    return norm(keras.layers.Concatenate(name=name and name + "_concat")([path1, path2]))


def submodel(input_shape, build):
    """A functional sub-network of `build` whose weights exist once; weight-sharing supernets
    call it inside tf.switch_case, while fixed builders call `build` on their own tensors."""
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, build(inputs))


def auxiliary_classifier(x, num_classes):
    """DARTS's AuxiliaryHeadCIFAR, used by every searched network (made for 8x8 inputs; a
    smaller map pools less): ReLU, 5x5 average pool stride 3, 1x1 conv 128-BN-ReLU, 2x2 conv
    768-BN-ReLU, dense. ENAS's head differs only in its second convolution (as wide as the
    map, "same" padding, then averaged)."""
    x = keras.layers.ReLU()(x)
    if x.shape[1] >= 5:
        x = keras.layers.AveragePooling2D(5, strides=3)(x)
    x = keras.layers.ReLU()(batch_norm(conv(x, 128, 1)))
    kernel = min(2, x.shape[1])
    x = conv(x, 768, kernel, padding="valid")
    x = keras.layers.ReLU()(batch_norm(x))
    return classifier(x, num_classes, name="auxiliary_classifier")


def stacked_he_normal(kernel_shape, count):
    """`count` kernels stacked on axis 0, each drawn as Keras draws one layer's kernel."""
    def init(shape, dtype=None):
        return tf.stack([keras.initializers.get(CONV_INIT)(kernel_shape, dtype) for _ in range(count)])
    return init


class DropPath(keras.__internal__.layers.BaseRandomLayer):
    """Drops a whole op output per example with probability `depth_scale * rate` while training
    (scaling the kept ones by the inverse keep probability). `rate` is a variable the trainer
    raises over the run; `depth_scale` lets deeper cells drop more (ENAS: (layer + 1) /
    layers; DARTS: 1 everywhere). Its random state is a tf.random.Generator the checkpoint holds
    (as the classifier's dropout's), so that a resumed run draws what an uninterrupted one would."""

    def __init__(self, depth_scale=1.0, **kwargs):
        super().__init__(force_generator=True, **kwargs)
        self.depth_scale = depth_scale

    def build(self, input_shape):
        self.rate = self.add_weight("rate", (), initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, x, training=None):
        if not training:
            return x
        keep = 1.0 - self.depth_scale * self.rate
        mask = tf.floor(keep + self._random_generator.random_uniform([tf.shape(x)[0], 1, 1, 1], dtype=x.dtype))
        return x / keep * mask


    def get_config(self):
        return {**super().get_config(), "depth_scale": self.depth_scale}


def random_generators(model):
    """The tf.random.Generator of every random layer (dropout, drop-path) in `model`. Keras
    leaves them out of checkpoints; a run's checkpoint holds them, so that a resumed run
    drops what an uninterrupted one would."""
    generators = []
    for layer in model.submodules:
        if isinstance(layer, keras.__internal__.layers.BaseRandomLayer):
            layer._random_generator._maybe_init()  # noqa: SLF001 (Keras creates it at first call)
            generators.append(layer._random_generator._generator)  # noqa: SLF001
    return generators


def set_drop_path_rate(model, rate):
    for layer in model.submodules:
        if isinstance(layer, DropPath):
            layer.rate.assign(rate)
