"""SCAS-ENAS end to end: tiny searches through the CLI, the outputs, resume, and arch files."""
import dataclasses
import json
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import REPO
from scas_tf import architectures, configs, data, pruning
from scas_tf.search import enas

SCAS = [sys.executable, "-m", "scas_tf"]


def scas(*args):
    return subprocess.run([*SCAS, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


def tiny_search(method, output_dir):
    """The tiny preset; macro trains two finalists."""
    finalists = ["--final_candidates=2"] if method == "enas_macro" else []
    return scas("search", f"--method={method}", "--preset=tiny", "--target_sparsity=0.5",
                f"--output_dir={output_dir}", *finalists)


@pytest.fixture(scope="module")
def macro_search(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("enas_macro")
    result = tiny_search("enas_macro", output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def check_search_outputs(method, output_dir):
    spec = (output_dir / "architecture.txt").read_text().strip()
    space, arch = architectures.parse(spec)
    assert space == method
    results = json.loads((output_dir / "results.json").read_text())
    assert results["architecture"] == spec
    assert abs(results["shared_weight_sparsity"] - 0.5) < 0.01  # every shared kernel, sampled or not
    final = results["final"]
    assert final["config"]["arch"] == spec and abs(final["weight_sparsity"] - 0.5) < 0.01
    for key in ("test_accuracy", "params", "nonzero_params", "dense_macs", "sparse_macs", "train_seconds"):
        assert key in final
    assert (output_dir / results["final_dir"] / "saved_model").is_dir()
    candidates = json.loads((output_dir / "candidates.json").read_text())
    trained = [c for c in candidates if "final" in c]
    assert trained == candidates[:len(trained)]  # the best-scored ones
    chosen = [c for c in trained if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["architecture"] == arch.to_text()
    assert chosen[0]["final"]["validation_accuracy"] == max(c["final"]["validation_accuracy"] for c in trained)
    assert chosen[0]["final"]["dir"] == results["final_dir"]
    for moment in ("start", "end"):
        policy = results["controller_policy"][moment]
        assert policy["entropy"] > 0
        for frequencies in policy["op_frequencies"].values():
            assert abs(sum(frequencies.values()) - 1) < 1e-6
    assert list((output_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert list((output_dir / "checkpoints").glob("ckpt-*.index"))
    return spec, candidates


def test_tiny_macro_search_writes_every_output(macro_search):
    _, candidates = check_search_outputs("enas_macro", macro_search)
    assert sum("final" in c for c in candidates) == 2  # --final_candidates=2
    assert len({c["architecture"] for c in candidates}) == len(candidates)


def test_tiny_micro_search_runs_end_to_end_through_the_cli(tmp_path):
    """The micro preset's final training has the auxiliary head, drop-path and cutout."""
    result = tiny_search("enas_micro", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    check_search_outputs("enas_micro", tmp_path)
    final_config = json.loads((tmp_path / "results.json").read_text())["final"]["config"]
    assert final_config["auxiliary_weight"] == 0.4 and final_config["drop_path"] > 0 and final_config["cutout"] > 0


def test_finished_search_returns_its_results(macro_search):
    spec = (macro_search / "architecture.txt").read_text().strip()
    again = tiny_search("enas_macro", macro_search)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{macro_search} is finished" in again.stderr
    assert json.loads((macro_search / "results.json").read_text())["architecture"] == spec


def test_saved_architecture_trains_with_arch_file(macro_search, tmp_path):
    spec = (macro_search / "architecture.txt").read_text().strip()
    retrain = scas("train", f"--arch_file={macro_search / 'architecture.txt'}", "--preset=tiny",
                   "--epochs=1", "--filters=4", f"--output_dir={tmp_path}")
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    assert json.loads((tmp_path / "results.json").read_text())["config"]["arch"] == spec


def test_search_flags_are_checked(tmp_path):
    result = scas("search", "--method=enas_nano", f"--output_dir={tmp_path}")
    assert result.returncode == 2 and result.stderr.strip().endswith(
        "scas: error: unknown method 'enas_nano'; choose one of enas_macro, enas_micro, darts, smash")
    result = scas("search", "--target_sparsity=1.0", f"--output_dir={tmp_path}")
    assert result.stderr.strip().endswith("scas: error: target_sparsity must be in [0, 1), got 1.0")
    result = scas("train", "--controller_steps=3", f"--output_dir={tmp_path}")
    assert result.stderr.strip().endswith("scas: error: --controller_steps does not apply to `scas train`")
    (tmp_path / "bad.txt").write_text("enas_micro: 0 2 0")
    result = scas("train", f"--arch_file={tmp_path / 'bad.txt'}", f"--output_dir={tmp_path}")
    assert result.returncode == 2 and "scas: error: malformed ENAS micro architecture" in result.stderr
    assert "Traceback" not in result.stderr


def test_shared_weights_reach_the_target_and_macro_rewards_use_moving_statistics(tmp_path):
    """The search's own pruner (one global step for all shared weights) ends at the target; a
    macro reward is the accuracy of the pruned supernet with BN's moving statistics and no
    dropout (the reference's `build_valid_rl`)."""
    config = dataclasses.replace(configs.enas_preset("enas_macro", "tiny"), target_sparsity=0.9,
                                 pruning_end=0.5, dropout=0.5)
    splits = data.load_splits(config.dataset, validation_fraction=config.validation_fraction)
    search = enas.EnasSearch(config, splits, tmp_path)
    search.search()
    report = search.pruner.report()
    assert any("depthwise" in w.name for w in report)
    assert abs(pruning.overall_sparsity(report) - 0.9) < 0.005

    images, labels = next(iter(data.eval_dataset(splits.validation, splits.info, 64)))
    archs = search.sample(4)[0]
    rewards = search.accuracies(iter(tf.data.Dataset.from_tensors((images, labels)).repeat()), archs)
    for arch, reward in zip(archs, rewards.numpy()):
        predictions = tf.argmax(search.supernet(images, arch, training=False), -1, output_type=labels.dtype)
        assert reward == pytest.approx(float(tf.reduce_mean(tf.cast(predictions == labels, tf.float32))))
