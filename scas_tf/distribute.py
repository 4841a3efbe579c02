"""Picks the tf.distribute strategy a run uses: the same code runs on CPU, GPUs and TPUs."""
import os
import platform

import tensorflow as tf

from scas_tf.errors import ScasError

STRATEGIES = ("auto", "default", "mirrored", "tpu")


def auto_strategy_name():
    """What `auto` picks: a TPU if one is attached, all GPUs if there are several, else the
    default strategy (one GPU or the CPU). Looks without initialising any device, so a
    notebook can ask before a `scas` process takes the accelerator."""
    if _tpu_address_known():
        return "tpu"
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"


def make_strategy(name="auto"):
    """The tf.distribute strategy `name` (one of STRATEGIES) names."""
    if name not in STRATEGIES:
        raise ScasError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "auto":
        name = auto_strategy_name()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            raise ScasError(f"no TPU could be reached ({e})") from None
        return tf.distribute.TPUStrategy(resolver)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _tpu_address_known():
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"))


def describe_machine():
    """The machine a run ran on, for its results (timings mean little without it)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    accelerators = [d.device_type for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "TPU")]
    return {"cpu": cpu, "cpu_cores": os.cpu_count(),
            "accelerators": {kind: accelerators.count(kind) for kind in sorted(set(accelerators))}}
