"""The machine's measured fp32 matmul throughput, the yardstick every benchmark prints."""
import time

import scas_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from scas_tf import data
from scas_tf.data.pipeline import Split, Splits


def matmul_gflops(n=2048, repeats=20):
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        matmul().numpy()
    return 2 * n ** 3 * repeats / (time.perf_counter() - started) / 1e9


def random_splits(dataset, num_images):
    """Random images of a dataset's shape: throughput does not depend on pixel values."""
    info = data.dataset_info(dataset)
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (num_images, *info.image_shape), dtype=np.uint8),
                  rng.integers(0, info.num_classes, num_images))
    return Splits(info, split, split, split, source="random")
