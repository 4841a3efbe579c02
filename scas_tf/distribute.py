"""Picks the tf.distribute strategy a run uses: the same code runs on CPU, GPUs and TPUs."""
import os

import tensorflow as tf

from scas_tf.errors import ScasError

STRATEGIES = ("auto", "default", "mirrored", "tpu")


def make_strategy(name="auto"):
    """auto: a TPU if one is attached, all GPUs if there are several, else the default strategy."""
    if name not in STRATEGIES:
        raise ScasError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "tpu" or (name == "auto" and _tpu_address_known()):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            raise ScasError(f"no TPU could be reached ({e})") from None
        return tf.distribute.TPUStrategy(resolver)
    if name == "mirrored" or (name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _tpu_address_known():
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"))
