"""The `scas` command line: one-line errors, documented flags, and resume after a kill."""
import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

SCAS = [sys.executable, "-m", "scas_tf"]


def scas(*args, **kwargs):
    return subprocess.run([*SCAS, *args], capture_output=True, text=True, cwd=REPO, timeout=300, **kwargs)


@pytest.mark.parametrize("args, message", [
    (["--target_sparsity=1.5"], "scas: error: target_sparsity must be in [0, 1), got 1.5"),
    (["--target_sparsity=-0.1"], "scas: error: target_sparsity must be in [0, 1), got -0.1"),
    (["--epochs=0"], "scas: error: epochs must be positive, got 0"),
    (["--dataset=svhn"], "scas: error: unknown dataset 'svhn'; choose one of mnist, mnist_mini, cifar10, cifar100"),
    (["--arch=vgg99"], "scas: error: unknown architecture 'vgg99'"),
    (["--dataset=mnist", "--data_dir=/nonexistent"], "scas: error: data directory does not exist: /nonexistent"),
    (["--validation_fraction=1.2"], "scas: error: validation_fraction must be in (0, 1), got 1.2"),
])
def test_bad_flag_values_fail_fast_with_one_line(args, message, tmp_path):
    result = scas("train", f"--output_dir={tmp_path / 'run'}", *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_corrupt_data_file_is_named(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes(b"\x1f\x8b broken")
    result = scas("train", "--dataset=mnist", f"--data_dir={tmp_path}", f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"scas: error: corrupt data file: {folder / 'train-images-idx3-ubyte.gz'}")


def test_unknown_command_and_non_numeric_flag():
    result = scas("prune")
    assert result.returncode != 0 and "expected one command, one of: train, search" in result.stderr
    result = scas("train", "--epochs=many")
    assert result.returncode != 0 and "flag --epochs=many" in result.stderr


def test_helpfull_documents_every_flag():
    out = scas("--helpfull").stdout
    for flag in ("--target_sparsity", "--dataset", "--data_dir", "--output_dir", "--epochs",
                 "--batch_size", "--seed", "--preset", "--strategy", "--pruning_frequency"):
        assert flag in out, flag


def test_killed_run_resumes_and_finishes_with_the_same_step_count(tmp_path):
    """A second process on the folder is refused while the first holds it; once the first is
    killed its lock goes with it and a rerun resumes from the last checkpoint."""
    args = ["train", "--preset=tiny", "--target_sparsity=0.5", "--checkpoint_every_steps=10",
            f"--output_dir={tmp_path}"]
    process = subprocess.Popen([*SCAS, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    # CheckpointManager writes ckpt-N.index before the "checkpoint" state file that names it;
    # a kill between the two leaves nothing to resume from.
    while not (tmp_path / "checkpoints" / "checkpoint").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGSTOP)  # still holding its folder
    second = scas(*args)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith(f"scas: error: {tmp_path} is in use by pid {process.pid} on ")
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "results.json").exists()

    resumed = scas(*args)
    assert resumed.returncode == 0, resumed.stderr
    resumed_at = int(resumed.stderr.split("at step ")[1].split()[0])
    results = json.loads((tmp_path / "results.json").read_text())
    total = results["num_train"] // 32 * 2  # tiny preset: batch 32, 2 epochs
    assert 0 < resumed_at < total
    assert results["steps"] == total
    assert abs(results["weight_sparsity"] - 0.5) < 0.01
