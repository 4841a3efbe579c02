"""SCAS-ENAS end to end: tiny searches through the CLI, the outputs, resume, and arch files."""
import json
import subprocess
import sys

import pytest

from conftest import REPO
from scas_tf import architectures, configs, data, pruning
from scas_tf.search import enas

SCAS = [sys.executable, "-m", "scas_tf.cli"]


def scas(*args):
    return subprocess.run([*SCAS, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.mark.parametrize("method", ["enas_macro", "enas_micro"])
def test_tiny_search_runs_end_to_end_through_the_cli(method, tmp_path):
    result = scas("search", f"--method={method}", "--preset=tiny", "--target_sparsity=0.5",
                  f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    spec = (tmp_path / "architecture.txt").read_text().strip()
    space, arch = architectures.parse(spec)
    assert space == method
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["architecture"] == spec
    assert abs(results["shared_weight_sparsity"] - 0.5) < 0.01  # every shared kernel, sampled or not
    final = results["final"]
    assert final["config"]["arch"] == spec and abs(final["weight_sparsity"] - 0.5) < 0.01
    for key in ("test_accuracy", "params", "nonzero_params", "dense_macs", "sparse_macs", "train_seconds"):
        assert key in final
    candidates = json.loads((tmp_path / "candidates.json").read_text())
    assert candidates[0]["architecture"] == arch.to_text()
    assert (tmp_path / "final" / "saved_model").is_dir()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "checkpoints").glob("ckpt-*.index"))

    # The saved architecture trains on its own through `scas train --arch_file`.
    retrain = scas("train", f"--arch_file={tmp_path / 'architecture.txt'}", "--preset=tiny", "--epochs=1",
                   "--filters=4", f"--output_dir={tmp_path / 'retrain'}")
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    assert json.loads((tmp_path / "retrain" / "results.json").read_text())["config"]["arch"] == spec

    # Running the finished search again resumes: no search step is repeated.
    again = scas("search", f"--method={method}", "--preset=tiny", "--target_sparsity=0.5",
                 f"--output_dir={tmp_path}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming search" in again.stderr and "search step" not in again.stderr
    assert json.loads((tmp_path / "results.json").read_text())["architecture"] == spec


def test_search_flags_are_checked(tmp_path):
    result = scas("search", "--method=enas_nano", f"--output_dir={tmp_path}")
    assert result.returncode == 2 and result.stderr.strip().endswith(
        "scas: error: unknown method 'enas_nano'; choose one of enas_macro, enas_micro")
    result = scas("search", "--target_sparsity=1.0", f"--output_dir={tmp_path}")
    assert result.stderr.strip().endswith("scas: error: target_sparsity must be in [0, 1), got 1.0")
    result = scas("train", "--controller_steps=3", f"--output_dir={tmp_path}")
    assert result.stderr.strip().endswith("scas: error: --controller_steps does not apply to `scas train`")
    (tmp_path / "bad.txt").write_text("enas_micro: 0 2 0")
    result = scas("train", f"--arch_file={tmp_path / 'bad.txt'}", f"--output_dir={tmp_path}")
    assert result.returncode == 2 and "scas: error: malformed ENAS micro architecture" in result.stderr
    assert "Traceback" not in result.stderr


def test_shared_weights_reach_the_target_in_process(tmp_path):
    """The search's own pruner (one global step for all shared weights) ends at the target."""
    config = configs.enas_preset("enas_macro", "tiny")
    config = enas.EnasConfig(**{**config.__dict__, "target_sparsity": 0.9, "pruning_end": 0.5})
    splits = data.load_splits(config.dataset, validation_fraction=config.validation_fraction)
    search = enas.EnasSearch(config, splits, tmp_path)
    search.search()
    report = search.pruner.report()
    assert any("depthwise" in w.name for w in report)
    assert abs(pruning.overall_sparsity(report) - 0.9) < 0.005
