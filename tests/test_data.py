"""Data readers on the real files, on tiny files written in the original formats, and pipelines."""
import dataclasses
import gzip
import pickle
import shutil

import numpy as np
import pytest
import tensorflow as tf

from scas_tf import configs, data
from scas_tf.data import readers, sources
from scas_tf.errors import ScasError
from scas_tf.search.loop import search_splits


def write_idx(path, array, magic, compress):
    payload = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload += array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(payload)


def write_tiny_mnist(folder, compress, num=20):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (num, 28, 28)), 2051, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(num) % 10, 2049, compress)


def write_cifar_pickle(path, num, label_key, num_classes):
    rng = np.random.default_rng(1)
    batch = {b"data": rng.integers(0, 256, (num, 3072), dtype=np.uint8),
             label_key: list(rng.integers(0, num_classes, num))}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    return batch


def test_embedded_mnist_mini_is_balanced_real_mnist():
    arrays = sources.load_arrays("mnist_mini")
    assert arrays.train_images.shape == (5000, 28, 28, 1) and arrays.test_images.shape == (1000, 28, 28, 1)
    assert np.bincount(arrays.train_labels).tolist() == [500] * 10
    assert np.bincount(arrays.test_labels).tolist() == [100] * 10
    assert 30 < arrays.train_images.mean() < 40  # MNIST's mean pixel is about 33


def test_full_mnist_from_shared_folder_passes_checksums(shared_data):
    arrays = sources.load_arrays("mnist", data_dir=shared_data)
    assert arrays.train_images.shape == (60000, 28, 28, 1)
    assert np.bincount(arrays.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_cifar10_copy_found_one_level_down(shared_data):
    arrays = sources.load_arrays("cifar10", data_dir=shared_data, allow_partial_data=True)  # data_batch_1 only
    assert arrays.source.endswith("cifar-10-batches-py (partial: lacks data_batch_2, data_batch_3, data_batch_4, "
                                  "data_batch_5 (10,000 of 50,000 training images))")
    assert arrays.train_images.shape == (10000, 32, 32, 3) and arrays.test_images.shape == (10000, 32, 32, 3)
    assert np.bincount(arrays.test_labels).tolist() == [1000] * 10


def test_full_size_mnist_with_one_changed_byte_is_corrupt(shared_data, tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(shared_data / "mnist" / name, tmp_path / name)
    payload = bytearray(gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz").read())
    payload[5000] ^= 1
    gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb").write(bytes(payload))
    with pytest.raises(ScasError, match="corrupt data file: .*t10k-images.*md5"):
        readers.read_mnist_split(tmp_path, "t10k", full_size=10000)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_gzipped_or_not(tmp_path, compress):
    write_tiny_mnist(tmp_path, compress)
    images, labels = readers.read_mnist_split(tmp_path, "train")
    assert images.shape == (20, 28, 28, 1) and labels.tolist() == [i % 10 for i in range(20)]


def test_truncated_and_mislabelled_idx_files_name_the_file(tmp_path):
    write_tiny_mnist(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ScasError, match=r"corrupt data file: .*train-images-idx3-ubyte \(.*data bytes"):
        readers.read_mnist_split(tmp_path, "train")
    write_idx(path, np.zeros((20, 28, 28)), 2049, compress=False)
    with pytest.raises(ScasError, match="idx magic 2049, expected 2051"):
        readers.read_mnist_split(tmp_path, "train")


def test_bad_gzip_and_missing_files(tmp_path):
    write_tiny_mnist(tmp_path, compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ScasError, match="corrupt data file: .*t10k-labels-idx1-ubyte.gz"):
        readers.read_mnist_split(tmp_path, "t10k")
    with pytest.raises(ScasError, match="missing data file: .*train-images-idx3-ubyte"):
        readers.read_mnist_split(tmp_path / "nowhere", "train")


def test_cifar100_pickles_in_original_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    train = write_cifar_pickle(folder / "train", 30, b"fine_labels", 100)
    write_cifar_pickle(folder / "test", 10, b"fine_labels", 100)
    arrays = sources.load_arrays("cifar100", data_dir=tmp_path)
    assert arrays.train_images.shape == (30, 32, 32, 3)
    # Channel-major rows: the first 1024 bytes are the red plane.
    np.testing.assert_array_equal(arrays.train_images[0, :, :, 0].ravel(), train[b"data"][0, :1024])
    assert arrays.train_labels.tolist() == [int(v) for v in train[b"fine_labels"]]


def test_cifar_labels_out_of_range_and_garbage_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_pickle(folder / "data_batch_1", 10, b"labels", 100)
    write_cifar_pickle(folder / "test_batch", 10, b"labels", 10)
    with pytest.raises(ScasError, match=r"data_batch_1 \(labels outside 0..9\)"):
        sources.load_arrays("cifar10", data_dir=tmp_path)
    (folder / "data_batch_1").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ScasError, match="corrupt data file: .*data_batch_1"):
        sources.load_arrays("cifar10", data_dir=tmp_path)


def test_dataset_absent_everywhere_is_one_clear_error(tmp_path):
    with pytest.raises(ScasError, match="dataset cifar100: .*no cifar100 files under"):
        sources.load_arrays("cifar100", data_dir=tmp_path)
    with pytest.raises(ScasError, match="unknown dataset 'svhn'"):
        sources.load_arrays("svhn")
    with pytest.raises(ScasError, match="data directory does not exist"):
        sources.load_arrays("mnist", data_dir=tmp_path / "missing")


def test_validation_split_is_seeded_and_disjoint():
    a = data.load_splits("mnist_mini", validation_fraction=0.1, seed=3)
    b = data.load_splits("mnist_mini", validation_fraction=0.1, seed=3)
    c = data.load_splits("mnist_mini", validation_fraction=0.1, seed=4)
    assert len(a.train) == 4500 and len(a.validation) == 500
    np.testing.assert_array_equal(a.validation.images, b.validation.images)
    assert not np.array_equal(a.validation.labels, c.validation.labels)
    train_rows = {img.tobytes() for img in a.train.images}
    assert not any(img.tobytes() in train_rows for img in a.validation.images)


def test_search_images_cut_train_and_validation_in_proportion_and_the_final_training_keeps_all():
    config = configs.search_preset("smash", "tiny")
    load = lambda fraction: data.load_splits("mnist_mini", validation_fraction=fraction)  # noqa: E731
    searched, whole = search_splits(dataclasses.replace(config, search_images=1000), load)
    assert (len(searched.train), len(searched.validation)) == (800, 200)  # validation_fraction 0.2
    np.testing.assert_array_equal(searched.train.images, whole.train.images[:800])
    assert len(whole.train) + len(whole.validation) == 5000 and searched.test is whole.test
    searched, whole = search_splits(config, load)  # 0: all of them
    assert searched is whole


def test_training_batches_resume_mid_epoch_exactly():
    splits = data.load_splits("mnist_mini")
    full = list(data.train_dataset(splits.train, splits.info, 64, seed=1, epoch=2).as_numpy_iterator())
    resumed = list(data.train_dataset(splits.train, splits.info, 64, seed=1, epoch=2, start_batch=5).as_numpy_iterator())
    assert len(full) == len(splits.train) // 64 and len(resumed) == len(full) - 5
    for (x1, y1), (x2, y2) in zip(full[5:], resumed):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    other_epoch = next(data.train_dataset(splits.train, splits.info, 64, seed=1, epoch=3).as_numpy_iterator())
    assert not np.array_equal(other_epoch[1], full[0][1])


def test_normalisation_and_cifar_augmentation(shared_data):
    splits = data.load_splits("cifar10", data_dir=shared_data, validation_fraction=0.1, allow_partial_data=True)
    x, y = next(data.train_dataset(splits.train, splits.info, 256, seed=0, epoch=0).as_numpy_iterator())
    assert x.shape == (256, 32, 32, 3) and x.dtype == np.float32
    assert abs(x.mean()) < 0.3 and 0.7 < x.std() < 1.3  # roughly standardised
    xe, _ = next(data.eval_dataset(splits.validation, splits.info, 256).as_numpy_iterator())
    raw = (splits.validation.images[:256] / 255.0 - np.array(splits.info.mean)) / np.array(splits.info.std)
    np.testing.assert_allclose(xe, raw, atol=1e-5)  # evaluation is unaugmented
    # Crops with 4-pixel zero padding: some training images have an all-padding border row.
    zero_value = (-np.array(splits.info.mean) / np.array(splits.info.std)).astype(np.float32)
    border_padded = np.all(np.isclose(x[:, 0, :, :], zero_value), axis=(1, 2))
    assert 0.2 < border_padded.mean() < 0.8


def test_cutout_zeroes_one_clipped_square_the_same_way_each_time():
    cutout = data.pipeline.cutout
    image = tf.ones([10, 10, 1])
    holes = [cutout(image, 4, tf.constant([7, seed], tf.int64))[..., 0].numpy() for seed in range(20)]
    for hole in holes:
        rows, cols = np.nonzero(hole == 0)
        assert 1 <= len(rows) <= 16 and len(rows) == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # one rectangle
    assert any((hole == 0).sum() < 16 for hole in holes)  # clipped at the border sometimes
    seed = tf.constant([7, 0], tf.int64)
    np.testing.assert_array_equal(cutout(image, 4, seed), cutout(image, 4, seed))
