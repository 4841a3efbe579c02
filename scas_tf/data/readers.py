"""Readers for the datasets' original distribution files, with integrity checks.

Each reader returns numpy arrays (images uint8 NHWC, labels int64) and raises ScasError
naming the file when it is missing, truncated or not what it claims to be.
"""
import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np

from scas_tf.errors import ScasError

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

# md5 of the *uncompressed* official MNIST files: a gzip wrapper may differ between copies,
# the payload may not.
MNIST_CONTENT_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def find_idx_file(folder, stem):
    """Returns folder/stem or folder/stem.gz, whichever exists."""
    for name in (stem, stem + ".gz"):
        path = Path(folder) / name
        if path.is_file():
            return path
    raise ScasError(f"missing data file: {Path(folder) / stem}[.gz]")


def read_bytes(path):
    """Reads a file, transparently un-gzipping it; a bad gzip stream is a corrupt file."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise ScasError(f"missing data file: {path}") from None
    except (OSError, EOFError) as e:
        raise ScasError(f"corrupt data file: {path} ({e})") from None


def parse_idx(payload, path, expected_magic):
    """Parses an idx payload (big-endian header of magic + dims, then uint8 data)."""
    if len(payload) < 8:
        raise ScasError(f"corrupt data file: {path} (too short for an idx header)")
    magic = int.from_bytes(payload[:4], "big")
    if magic != expected_magic:
        raise ScasError(f"corrupt data file: {path} (idx magic {magic}, expected {expected_magic})")
    ndim = payload[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(payload[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(payload) != header + int(np.prod(dims)):
        raise ScasError(f"corrupt data file: {path} ({len(payload) - header} data bytes for shape {dims})")
    return np.frombuffer(payload, np.uint8, offset=header).reshape(dims)


def check_content_md5(payload, path, known_md5):
    """Checks a file that claims to be a full official file against its published content."""
    if known_md5 and hashlib.md5(payload).hexdigest() != known_md5:
        raise ScasError(f"corrupt data file: {path} (content md5 differs from the official file)")


def read_mnist_split(folder, prefix, full_size=None):
    """Reads `<prefix>-images-idx3-ubyte[.gz]` and labels; checks shapes, labels, checksums.

    full_size: the official split size; a file of that size must match the official md5.
    """
    images_path = find_idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = find_idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    images_raw, labels_raw = read_bytes(images_path), read_bytes(labels_path)
    images = parse_idx(images_raw, images_path, IDX_IMAGES_MAGIC)
    labels = parse_idx(labels_raw, labels_path, IDX_LABELS_MAGIC).astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ScasError(f"corrupt data file: {images_path} (shape {images.shape}, expected N x 28 x 28)")
    check_labels(labels, 10, len(images), f"corrupt data file: {labels_path}")
    if len(images) == full_size:
        check_content_md5(images_raw, images_path, MNIST_CONTENT_MD5[f"{prefix}-images-idx3-ubyte"])
        check_content_md5(labels_raw, labels_path, MNIST_CONTENT_MD5[f"{prefix}-labels-idx1-ubyte"])
    return images[..., None], labels


def check_labels(labels, num_classes, num_images, where):
    """Checks that labels are one class index per image; `where` (a file or a source) starts
    the error, so that one check serves the readers and `sources.check_arrays`."""
    if labels.ndim != 1 or len(labels) != num_images:
        raise ScasError(f"{where} ({labels.shape} labels for {num_images} images)")
    if labels.dtype.kind not in "iu":
        raise ScasError(f"{where} (labels of dtype {labels.dtype}, expected integers)")
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        index = int(np.argmax(outside))
        raise ScasError(f"{where} (labels outside 0..{num_classes - 1}): label {labels[index]} at index {index}")


def read_cifar_batch(path, label_key, num_classes):
    """Reads one CIFAR python pickle: b'data' N x 3072 channel-major, labels under label_key."""
    path = Path(path)
    if not path.is_file():
        raise ScasError(f"missing data file: {path}")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, OSError) as e:
        raise ScasError(f"corrupt data file: {path} ({type(e).__name__}: {e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ScasError(f"corrupt data file: {path} (data shape {data.shape}, expected N x 3072)")
    check_labels(labels, num_classes, len(data), f"corrupt data file: {path}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels
