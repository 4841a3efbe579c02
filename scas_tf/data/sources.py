"""Where each dataset's arrays come from: the embedded subset, a local folder, or tfds.

Sources are tried in order: original files in a local folder (`--data_dir` or SCAS_DATA_DIR),
then tensorflow_datasets' prepared copy. `mnist_mini` is always the subset shipped in data/.
Whatever the source, `check_arrays` checks what it gave; a local copy smaller than the official
dataset is an error unless `allow_partial_data`, which marks the run's recorded source partial.
"""
import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from scas_tf.data import readers
from scas_tf.errors import ScasError

EMBEDDED_DATA = Path(__file__).resolve().parents[2] / "data"
log = logging.getLogger("scas")


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
    source: str  # where they were read from (and whether only in part), for the run's record


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


CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
# Official (training, test) sizes of the datasets whose local copies are checked for completeness:
# a CIFAR-10 copy may lack some of its five training files, an idx file may hold a subset.
# CIFAR-100's two files are read as they are.
OFFICIAL_SIZES = {"mnist": (60000, 10000), "cifar10": (50000, 10000)}


def read_local(name, folder):
    if name in ("mnist", "mnist_mini"):
        full = name == "mnist"
        train = readers.read_mnist_split(folder, "train", 60000 if full else None)
        test = readers.read_mnist_split(folder, "t10k", 10000 if full else None)
    elif name == "cifar10":
        batches = [folder / b for b in CIFAR10_TRAIN_BATCHES if (folder / b).is_file()]
        if not batches:
            raise ScasError(f"missing data file: {folder / CIFAR10_TRAIN_BATCHES[0]}")
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


def shortfall(arrays, name, folder):
    """What a local copy lacks of the official dataset, as a phrase; None when nothing."""
    have = (len(arrays.train_labels), len(arrays.test_labels))
    counts = ", ".join(f"{n:,} of {full:,} {split} images" for split, n, full in
                       zip(("training", "test"), have, OFFICIAL_SIZES.get(name, have)) if n < full)
    if not counts:
        return None
    missing = [b for b in CIFAR10_TRAIN_BATCHES if not (folder / b).is_file()] if name == "cifar10" else []
    return f"lacks {', '.join(missing)} ({counts})" if missing else f"holds only {counts}"


def check_complete(arrays, name, folder, allow_partial_data):
    """A partial copy would silently change what a run's numbers mean: an error unless allowed,
    and when allowed, a warning and a source that says so in the run's record."""
    lacking = shortfall(arrays, name, folder)
    if lacking is None:
        return arrays
    if not allow_partial_data:
        raise ScasError(f"{name} folder {folder} {lacking}; pass --allow_partial_data to use it anyway")
    log.warning("using a partial %s folder: %s %s", name, folder, lacking)
    return dataclasses.replace(arrays, source=f"{folder} (partial: {lacking})")


def check_images(images, image_shape, where):
    if images.ndim != 4 or images.shape[1:] != tuple(image_shape):
        raise ScasError(f"{where} (images of shape {images.shape}, expected N x {' x '.join(map(str, image_shape))})")
    if images.dtype == np.uint8:
        return
    if images.dtype.kind not in "iuf":
        raise ScasError(f"{where} (images of dtype {images.dtype}, expected uint8 or float)")
    # Negated so that NaN, which fails every comparison, counts as outside.
    outside = ~((images >= 0) & (images <= 255))
    if outside.any():
        first = np.unravel_index(np.argmax(outside), images.shape)
        raise ScasError(f"{where} ({np.count_nonzero(outside):,} pixels non-finite or outside 0..255): "
                        f"{images[first]} in image {first[0]}")


def check_arrays(arrays, info):
    """Checks arrays from any source (the readers check their files' formats; a tfds or
    user-provided copy has only this): shapes, pixel values, labels and their counts."""
    for split, images, labels in (("training", arrays.train_images, arrays.train_labels),
                                  ("test", arrays.test_images, arrays.test_labels)):
        where = f"bad data: {info.name} {split} split from {arrays.source}"
        check_images(images, info.image_shape, where)
        readers.check_labels(labels, info.num_classes, len(images), where)


def read_first_source(info, data_dir, tfds_download, allow_partial_data):
    if info.name == "mnist_mini":
        return read_local(info.name, EMBEDDED_DATA / "mnist_mini")
    data_dir = resolve_data_dir(data_dir)
    folder = find_local_folder(info.name, data_dir) if data_dir else None
    if folder is not None:
        return check_complete(read_local(info.name, folder), info.name, folder, allow_partial_data)
    try:
        return read_tfds(info, tfds_download)
    except ScasError as e:
        where = f"no {info.name} files under {data_dir}" if data_dir else "no --data_dir given"
        raise ScasError(f"{e}; {where}") from None


def load_arrays(name, data_dir=None, tfds_download=False, *, allow_partial_data=False):
    """Loads a dataset's train and test splits from the first source that has it, checked.
    allow_partial_data: accept a local copy smaller than the official dataset (warned about)."""
    info = dataset_info(name)
    arrays = read_first_source(info, data_dir, tfds_download, allow_partial_data)
    check_arrays(arrays, info)
    return arrays
