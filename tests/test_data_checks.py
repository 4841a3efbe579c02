"""Partial local copies and bad data inside files: one-line errors naming the file or source."""
import logging
import pickle

import numpy as np
import pytest

from scas_tf import data
from scas_tf.data import readers, sources
from scas_tf.errors import ScasError
from test_cli import scas
from test_data import write_cifar_pickle, write_idx, write_tiny_mnist


def write_cifar10(data_dir, batches, num=10):
    folder = data_dir / "cifar-10-batches-py"
    for name in [*batches, "test_batch"]:
        write_cifar_pickle(folder / name, num, b"labels", 10)
    return folder


def rewrite_pickle(path, **changes):
    batch = pickle.loads(path.read_bytes())
    batch.update({key.encode(): value for key, value in changes.items()})
    path.write_bytes(pickle.dumps(batch))


def one_line_error(call, *args, **kwargs):
    with pytest.raises(ScasError) as raised:
        call(*args, **kwargs)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_cifar10_folder_missing_batches_is_an_error_naming_them(tmp_path):
    folder = write_cifar10(tmp_path, ["data_batch_1", "data_batch_2", "data_batch_4"])
    message = one_line_error(sources.load_arrays, "cifar10", data_dir=tmp_path)
    assert message == (f"cifar10 folder {folder} lacks data_batch_3, data_batch_5 (30 of 50,000 training "
                       "images, 10 of 10,000 test images); pass --allow_partial_data to use it anyway")


def test_allowed_partial_cifar10_loads_with_a_warning_and_a_partial_source(tmp_path, caplog):
    folder = write_cifar10(tmp_path, ["data_batch_1", "data_batch_2", "data_batch_4"])
    with caplog.at_level(logging.WARNING, logger="scas"):
        splits = data.load_splits("cifar10", data_dir=tmp_path, validation_fraction=0.2, allow_partial_data=True)
    assert len(splits.train) + len(splits.validation) == 30
    assert splits.source.startswith(f"{folder} (partial: lacks data_batch_3, data_batch_5 (30 of 50,000")
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "data_batch_3, data_batch_5" in record.getMessage()


def test_small_mnist_folder_is_partial_too(tmp_path):
    write_tiny_mnist(tmp_path / "mnist", compress=True)
    message = one_line_error(sources.load_arrays, "mnist", data_dir=tmp_path)
    assert "mnist folder" in message and "holds only 20 of 60,000 training images, 20 of 10,000 test" in message
    arrays = sources.load_arrays("mnist", data_dir=tmp_path, allow_partial_data=True)
    assert "(partial: holds only 20 of 60,000" in arrays.source


def test_idx_label_out_of_range_names_file_value_and_index(tmp_path):
    write_tiny_mnist(tmp_path / "mnist", compress=False)
    labels = np.arange(20) % 10
    labels[5] = 11
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte"
    write_idx(path, labels, 2049, compress=False)
    message = one_line_error(sources.load_arrays, "mnist", data_dir=tmp_path)
    assert message == f"corrupt data file: {path} (labels outside 0..9): label 11 at index 5"


def test_cifar_pickle_label_out_of_range(tmp_path):
    folder = write_cifar10(tmp_path, ["data_batch_1"])
    rewrite_pickle(folder / "data_batch_1", labels=[0, 1, 2, -1, 4, 5, 6, 7, 8, 9])
    message = one_line_error(sources.load_arrays, "cifar10", data_dir=tmp_path)
    assert message == f"corrupt data file: {folder / 'data_batch_1'} (labels outside 0..9): label -1 at index 3"


def test_wrong_image_sizes_in_files(tmp_path):
    write_tiny_mnist(tmp_path, compress=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((20, 32, 32)), 2051, compress=False)
    message = one_line_error(readers.read_mnist_split, tmp_path, "train")
    assert message.endswith("train-images-idx3-ubyte (shape (20, 32, 32), expected N x 28 x 28)")
    folder = write_cifar10(tmp_path, ["data_batch_1"])
    rewrite_pickle(folder / "test_batch", data=np.zeros((10, 3000), np.uint8))
    message = one_line_error(readers.read_cifar_batch, folder / "test_batch", b"labels", 10)
    assert message.endswith("test_batch (data shape (10, 3000), expected N x 3072)")


def tiny_arrays(**changes):
    rng = np.random.default_rng(0)
    arrays = sources.Arrays(rng.integers(0, 256, (6, 32, 32, 3)).astype(np.float32), np.arange(6) % 10,
                            np.zeros((2, 32, 32, 3), np.uint8), np.array([3, 4]), source="a tfds copy")
    for name, value in changes.items():
        setattr(arrays, name, value)
    return arrays


def with_nan(images, image):
    images = images.copy()
    images[image, 1, 2, 0] = np.nan
    return images


@pytest.mark.parametrize("changes, problem", [
    ({}, None),
    ({"train_images": with_nan(tiny_arrays().train_images, 2)},
     "training split from a tfds copy (1 pixels non-finite or outside 0..255): nan in image 2"),
    ({"test_images": np.full((2, 32, 32, 3), np.inf)},
     "test split from a tfds copy (6,144 pixels non-finite or outside 0..255): inf in image 0"),
    ({"train_images": np.zeros((6, 28, 28, 1), np.uint8)},
     "training split from a tfds copy (images of shape (6, 28, 28, 1), expected N x 32 x 32 x 3)"),
    ({"train_labels": np.arange(5)}, "training split from a tfds copy ((5,) labels for 6 images)"),
    ({"train_labels": np.arange(6) * 0.5},
     "training split from a tfds copy (labels of dtype float64, expected integers)"),
    ({"test_labels": np.array([3, 10])}, "test split from a tfds copy (labels outside 0..9): label 10 at index 1"),
])
def test_check_arrays_on_any_source(changes, problem):
    arrays, info = tiny_arrays(**changes), sources.dataset_info("cifar10")
    if problem is None:
        sources.check_arrays(arrays, info)
    else:
        assert one_line_error(sources.check_arrays, arrays, info) == f"bad data: cifar10 {problem}"


def test_cli_partial_cifar10_fails_at_load_with_one_line(tmp_path):
    folder = write_cifar10(tmp_path, ["data_batch_1"])
    result = scas("train", "--preset=tiny", "--dataset=cifar10", f"--data_dir={tmp_path}",
                  f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"scas: error: cifar10 folder {folder} lacks data_batch_2, data_batch_3, data_batch_4, data_batch_5 (")
    assert not (tmp_path / "run" / "results.json").exists()
