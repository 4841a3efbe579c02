"""Shared test setup: two logical CPU devices (for MirroredStrategy), the real data paths, and
a run stopped right after a checkpoint."""
import contextlib
import re
from pathlib import Path
from unittest import mock

import pytest

import scas_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
import tensorflow as tf
from tensorflow.core.util import event_pb2

# Must happen before TensorFlow initialises its devices, hence at import of conftest.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from scas_tf import figures  # noqa: E402
from scas_tf.resumable import Resumable  # noqa: E402

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


class Killed(Exception):
    """Stands for SIGKILL right after a checkpoint: what is on disk is what a kill leaves."""


@contextlib.contextmanager
def killed_after_checkpoint(step):
    """Runs inside raise Killed right after saving the checkpoint of `step` (a resumed run
    that saved `step` again would have restarted instead of resuming)."""
    save = Resumable.save

    def save_then_die(loop, saved_step):
        save(loop, saved_step)
        if saved_step == step:
            raise Killed
    with mock.patch.object(Resumable, "save", save_then_die):
        yield


def checkpointed_values(folder):
    """Every variable of the latest checkpoint under folder/checkpoints but the wall clock."""
    path = tf.train.latest_checkpoint(str(folder / "checkpoints"))
    return {name: tf.train.load_variable(path, name) for name, _ in tf.train.list_variables(path)
            if not any(part in name for part in ("seconds", "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


def summaries(folder):
    """{tag: [summary value, ...]} of the event files in a run's TensorBoard folder."""
    values = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            for value in event_pb2.Event.FromString(record.numpy()).summary.value:
                values.setdefault(value.tag, []).append(value)
    return values


def charts_without_data(dashboard, tags):
    """The dashboard's (figures.write_dashboard's) tag patterns that match none of `tags`: its
    charts would stand empty."""
    _, charts = dashboard
    return [t for _, chart_tags in charts for t in chart_tags
            if not any(re.match(figures.tag_pattern(t), tag) for tag in tags)]
