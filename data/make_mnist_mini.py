"""Recipe for data/mnist_mini: a class-balanced, seeded subset of the official MNIST files.

    python data/make_mnist_mini.py ../shared/data/mnist data/mnist_mini

Takes 500 images per class from the official training set and 100 per class from the official
test set (numpy default_rng(2020)), keeps their original order, and writes them in the original
idx format, gzipped with mtime 0 so the bytes are reproducible.
"""
import gzip
import sys
from pathlib import Path

import numpy as np

from scas_tf.data import readers

SEED = 2020
PER_CLASS = {"train": 500, "t10k": 100}


def balanced_subset(labels, per_class, rng):
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picks))


def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def main(source, target):
    rng = np.random.default_rng(SEED)
    Path(target).mkdir(parents=True, exist_ok=True)
    for prefix, per_class in PER_CLASS.items():
        images, labels = readers.read_mnist_split(source, prefix, 60000 if prefix == "train" else 10000)
        keep = balanced_subset(labels, per_class, rng)
        write_idx(Path(target) / f"{prefix}-images-idx3-ubyte.gz", images[keep, ..., 0], readers.IDX_IMAGES_MAGIC)
        write_idx(Path(target) / f"{prefix}-labels-idx1-ubyte.gz", labels[keep], readers.IDX_LABELS_MAGIC)
        print(f"{prefix}: {len(keep)} images")


if __name__ == "__main__":
    main(*sys.argv[1:3])
