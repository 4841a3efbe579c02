"""Shared test setup: two logical CPU devices (for MirroredStrategy) and the real data paths."""
from pathlib import Path

import pytest

import scas_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
import tensorflow as tf

# Must happen before TensorFlow initialises its devices, hence at import of conftest.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """The read-only real datasets beside the checkout (full MNIST, a CIFAR-10 copy)."""
    assert SHARED_DATA.is_dir(), f"tests need the real datasets in {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def mirrored():
    """One MirroredStrategy over the two logical CPUs for the whole session: a second strategy
    over the same devices in one process can mix up their collectives' instance keys."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
