"""Train/validation/test splits and their tf.data pipelines.

Training batches are a pure function of (seed, epoch, batch index): the epoch's order is a
seeded permutation and each image's crop and flip use a stateless seed built from its index.
That is what lets a resumed run continue mid-epoch with exactly the batches it would have seen.
"""
import dataclasses
import functools

import numpy as np
import tensorflow as tf

from scas_tf.data import sources
from scas_tf.errors import ScasError

CIFAR_PADDING = 4


@dataclasses.dataclass
class Split:
    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray  # int64

    def __len__(self):
        return len(self.labels)

    @functools.cached_property
    def tensors(self):
        """The split as constant tensors, made once and shared by every epoch's pipeline."""
        return tf.constant(self.images), tf.constant(self.labels)


@dataclasses.dataclass
class Splits:
    info: sources.DatasetInfo
    train: Split
    validation: Split
    test: Split
    source: str


def load_splits(name, data_dir=None, validation_fraction=0.1, seed=0, tfds_download=False, *,
                allow_partial_data=False):
    """Loads a dataset and carves a seeded validation split out of its training set.
    allow_partial_data: accept a local copy smaller than the official dataset (warned about)."""
    if not 0.0 < validation_fraction < 1.0:
        raise ScasError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    arrays = sources.load_arrays(name, data_dir, tfds_download, allow_partial_data=allow_partial_data)
    order = np.random.default_rng(seed).permutation(len(arrays.train_labels))
    num_validation = max(1, int(round(validation_fraction * len(order))))
    val_idx, train_idx = np.sort(order[:num_validation]), np.sort(order[num_validation:])
    return Splits(
        info=sources.dataset_info(name),
        train=Split(arrays.train_images[train_idx], arrays.train_labels[train_idx]),
        validation=Split(arrays.train_images[val_idx], arrays.train_labels[val_idx]),
        test=Split(arrays.test_images, arrays.test_labels),
        source=arrays.source)


def limit_images(splits, num_images):
    """The splits with train + validation cut to num_images (0: unchanged), in proportion."""
    total = len(splits.train) + len(splits.validation)
    if not num_images or num_images >= total:
        return splits
    num_train = round(num_images * len(splits.train) / total)
    return dataclasses.replace(
        splits, train=Split(splits.train.images[:num_train], splits.train.labels[:num_train]),
        validation=Split(splits.validation.images[:num_images - num_train],
                         splits.validation.labels[:num_images - num_train]))


def normalize(images, info):
    """uint8 images -> float32, per-channel standardised with the dataset's statistics."""
    images = tf.cast(images, tf.float32) / 255.0
    return (images - tf.constant(info.mean)) / tf.constant(info.std)


def random_crop_and_flip(image, seed):
    """CIFAR augmentation: zero-pad by 4, take a random crop of the original size, maybe flip."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[CIFAR_PADDING, CIFAR_PADDING], [CIFAR_PADDING, CIFAR_PADDING], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)


def steps_per_epoch(split, batch_size):
    steps = len(split) // batch_size
    if steps == 0:
        raise ScasError(f"batch_size {batch_size} is larger than the training split ({len(split)} images)")
    return steps


def cutout(image, size, seed):
    """DeVries & Taylor's cutout on a normalised image: the pixels within size // 2 of a
    uniformly drawn centre (a square clipped at the border) are set to zero, the dataset mean."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    centre = tf.random.stateless_uniform([], seed, 0, height * width, dtype=tf.int32)
    centre_y, centre_x = centre // width, centre % width

    def inside(positions, centre):
        return (positions >= centre - size // 2) & (positions < centre + size // 2)

    hole = inside(tf.range(height), centre_y)[:, None] & inside(tf.range(width), centre_x)[None, :]
    return image * tf.cast(~hole, image.dtype)[:, :, None]


def train_dataset(split, info, batch_size, seed, epoch, start_batch=0, augment=None, cutout_size=0):
    """One epoch of shuffled (by default augmented) batches, starting at batch `start_batch`.
    `cutout_size` > 0 adds cutout to every image, augmented or not."""
    num_steps = steps_per_epoch(split, batch_size)
    order = np.random.default_rng([seed, epoch]).permutation(len(split))[:num_steps * batch_size]
    order = order[start_batch * batch_size:]
    images, labels = split.tensors
    augment = info.augment if augment is None else augment
    ds = tf.data.Dataset.from_tensor_slices(order)
    if augment or cutout_size:
        def transform_one(index):
            image_seed = tf.stack([tf.constant(seed * 1_000_003 + epoch, tf.int64), index])
            image = tf.gather(images, index)
            if augment:
                image = random_crop_and_flip(image, image_seed)
            image = normalize(image, info)
            if cutout_size:
                image = cutout(image, cutout_size, tf.random.experimental.stateless_fold_in(image_seed, 1))
            return image, tf.gather(labels, index)
        return ds.map(transform_one, num_parallel_calls=tf.data.AUTOTUNE).batch(
            batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True).map(
        lambda index: (normalize(tf.gather(images, index), info), tf.gather(labels, index)))
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(split, info, batch_size):
    """The whole split in order, unaugmented; the last batch may be partial."""
    ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels)).batch(batch_size)
    return ds.map(lambda x, y: (normalize(x, info), y)).prefetch(tf.data.AUTOTUNE)
