"""Where each dataset's arrays come from: the embedded subset, a local folder, or tfds.

Sources are tried in order: original files in a local folder (`--data_dir` or SCAS_DATA_DIR),
then tensorflow_datasets' prepared copy. `mnist_mini` is always the subset shipped in data/.
"""
import dataclasses
import os
from pathlib import Path

import numpy as np

from scas_tf.data import readers
from scas_tf.errors import ScasError

EMBEDDED_DATA = Path(__file__).resolve().parents[2] / "data"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    image_shape: tuple
    num_classes: int
    mean: tuple  # per channel, of the training images scaled to [0, 1]
    std: tuple
    augment: bool  # CIFAR-style random crop with 4-pixel padding and horizontal flip
    tfds_name: str = None


MNIST_STATS = dict(mean=(0.1307,), std=(0.3081,))
DATASETS = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10, augment=False, tfds_name="mnist", **MNIST_STATS),
    "mnist_mini": DatasetInfo("mnist_mini", (28, 28, 1), 10, augment=False, **MNIST_STATS),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), augment=True, tfds_name="cifar10"),
    "cifar100": DatasetInfo("cifar100", (32, 32, 3), 100, (0.5071, 0.4865, 0.4409),
                            (0.2673, 0.2564, 0.2762), augment=True, tfds_name="cifar100"),
}


@dataclasses.dataclass
class Arrays:
    """A dataset's official splits as numpy arrays: uint8 NHWC images, int64 labels."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # where they were read from, for the run's record


def dataset_info(name):
    if name not in DATASETS:
        raise ScasError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve_data_dir(data_dir=None):
    """The local folder to search: the flag, else SCAS_DATA_DIR, else None."""
    data_dir = data_dir or os.environ.get("SCAS_DATA_DIR")
    if data_dir and not Path(data_dir).is_dir():
        raise ScasError(f"data directory does not exist: {data_dir}")
    return Path(data_dir) if data_dir else None


# Per dataset: the sub-folder the original archive unpacks to, and a file proving it is there.
LOCAL_LAYOUT = {
    "mnist": ("mnist", "train-labels-idx1-ubyte"),
    "cifar10": ("cifar-10-batches-py", "test_batch"),
    "cifar100": ("cifar-100-python", "test"),
}


def find_local_folder(name, data_dir):
    """The folder under data_dir holding `name`'s original files, or None."""
    subfolder, marker = LOCAL_LAYOUT[name]
    candidates = [data_dir, data_dir / subfolder, *sorted(data_dir.glob(f"*/{subfolder}"))]
    for folder in candidates:
        if (folder / marker).is_file() or (folder / (marker + ".gz")).is_file():
            return folder
    return None


def read_local(name, folder):
    if name in ("mnist", "mnist_mini"):
        full = name == "mnist"
        train = readers.read_mnist_split(folder, "train", 60000 if full else None)
        test = readers.read_mnist_split(folder, "t10k", 10000 if full else None)
    elif name == "cifar10":
        batches = sorted(folder.glob("data_batch_*"))
        if not batches:
            raise ScasError(f"missing data file: {folder / 'data_batch_1'}")
        parts = [readers.read_cifar_batch(b, b"labels", 10) for b in batches]
        train = tuple(np.concatenate(p) for p in zip(*parts))
        test = readers.read_cifar_batch(folder / "test_batch", b"labels", 10)
    else:
        train = readers.read_cifar_batch(folder / "train", b"fine_labels", 100)
        test = readers.read_cifar_batch(folder / "test", b"fine_labels", 100)
    return Arrays(*train, *test, source=str(folder))


def read_tfds(info, download):
    """tensorflow_datasets' copy; raises ScasError when it has none and cannot download."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ScasError(f"dataset {info.name}: tensorflow_datasets is not installed") from None
    try:
        (train, test), = [tfds.as_numpy(tfds.load(
            info.tfds_name, split=["train", "test"], batch_size=-1, as_supervised=True,
            download=download))]
    except Exception as e:  # tfds raises many types (AssertionError, DatasetNotFoundError, ...)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ScasError(f"dataset {info.name}: tensorflow_datasets has no copy ({first_line})") from None
    return Arrays(train[0], train[1].astype(np.int64), test[0], test[1].astype(np.int64),
                  source=f"tensorflow_datasets:{info.tfds_name}")


def load_arrays(name, data_dir=None, tfds_download=False):
    """Loads a dataset's train and test splits from the first source that has it."""
    info = dataset_info(name)
    if name == "mnist_mini":
        return read_local(name, EMBEDDED_DATA / "mnist_mini")
    data_dir = resolve_data_dir(data_dir)
    if data_dir is not None:
        folder = find_local_folder(name, data_dir)
        if folder is not None:
            return read_local(name, folder)
    try:
        return read_tfds(info, tfds_download)
    except ScasError as e:
        where = f"no {name} files under {data_dir}" if data_dir else "no --data_dir given"
        raise ScasError(f"{e}; {where}") from None
