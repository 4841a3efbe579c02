"""The resumable loop: the divergence guard, resuming a diverged run with a lower learning rate,
and searches resumed inside an epoch ending exactly where uninterrupted ones do."""
import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, Killed, checkpointed_values, killed_after_checkpoint
from scas_tf import configs, data, report, run_dir
from scas_tf.config import TrainConfig
from scas_tf.errors import ScasError
from scas_tf.resumable import Diverged, Resumable
from scas_tf.search import enas, smash
from scas_tf.search.darts import DartsConfig

SCAS = [sys.executable, "-m", "scas_tf"]


def scas(*args):
    return subprocess.run([*SCAS, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


def test_guard_names_the_last_finite_checkpoint_and_saves_nothing_non_finite(tmp_path):
    weight = tf.Variable([1.0, 2.0])
    loop = Resumable(run_dir.RunDir(tmp_path), TrainConfig(checkpoint_every_steps=4), 20, 10, "seconds",
                     weight=weight, seconds=tf.Variable(0.0, dtype=tf.float64))
    assert loop.next_chunk(0) == 4 and loop.next_chunk(8) == 2  # stops at the epoch's end
    loop.after_chunk(4, 0.5, [weight])
    assert loop.manager.latest_checkpoint.endswith("ckpt-4")
    weight.assign([1.0, np.nan])
    with pytest.raises(Diverged, match=rf"non-finite weights by step 8; the last checkpoint \(step 4\) is finite: "
                                       rf"lower --learning_rate and rerun on {tmp_path} to resume from it"):
        loop.after_chunk(8, 0.5, [weight])
    assert loop.manager.latest_checkpoint.endswith("ckpt-4")
    assert json.loads((tmp_path / "diverged.json").read_text())["checkpoint_step"] == 4
    with pytest.raises(Diverged, match="non-finite loss by step 8"):
        loop.after_chunk(8, float("inf"), [])


def test_a_diverged_folder_accepts_a_lower_learning_rate_and_nothing_else(tmp_path):
    config = dataclasses.asdict(TrainConfig(learning_rate=10.0))
    run_dir.claim_config(tmp_path / "config.json", config)
    lower = {**config, "learning_rate": 0.1}
    with pytest.raises(ScasError, match="another config .learning_rate=10.0 there vs 0.1 now"):
        run_dir.claim_config(tmp_path / "config.json", lower)
    run_dir.claim_config(tmp_path / "config.json", {**config, "checkpoint_every_steps": 7})  # no effect on results
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "diverged.json").write_text("{}")
    with pytest.raises(ScasError, match="another config .epochs=10 there vs 11 now"):
        run_dir.claim_config(tmp_path / "config.json", {**lower, "epochs": 11})
    run_dir.claim_config(tmp_path / "config.json", lower)
    assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 0.1


def test_a_field_added_since_a_run_started_counts_as_its_default(tmp_path):
    config = dataclasses.asdict(TrainConfig())
    stored = {k: v for k, v in config.items() if k != "label_smoothing"}  # written before the field existed
    run_dir.claim_config(tmp_path / "config.json", stored)
    run_dir.claim_config(tmp_path / "config.json", config, run_dir.field_defaults(TrainConfig()))
    with pytest.raises(ScasError, match="another config .label_smoothing=0.0 there vs 0.1 now"):
        run_dir.claim_config(tmp_path / "config.json", {**config, "label_smoothing": 0.1},
                             run_dir.field_defaults(TrainConfig()))


def test_a_darts_run_from_before_kept_cells_resumes_and_reports_in_one_series(tmp_path):
    config = dataclasses.asdict(DartsConfig())
    earlier = {**{k: v for k, v in config.items() if k != "kept_cells"}, "recompute": True}
    run_dir.claim_config(tmp_path / "config.json", earlier)
    run_dir.claim_config(tmp_path / "config.json", config, run_dir.field_defaults(DartsConfig()))
    assert "recompute" not in json.loads((tmp_path / "config.json").read_text())
    assert report.series_key(earlier) == report.series_key({**config, "kept_cells": 0})


def test_diverged_training_stops_with_one_line_and_resumes_with_a_lower_learning_rate(tmp_path):
    args = ["train", "--preset=tiny", "--target_sparsity=0.5", f"--output_dir={tmp_path}"]
    diverged = scas(*args, "--learning_rate=10000")
    assert diverged.returncode == 2, diverged.stderr[-3000:]
    last = diverged.stderr.strip().splitlines()[-1]
    # Which goes non-finite first, the loss or a weight, depends on the CPU's kernels.
    assert re.match(r"scas: error: the run diverged: non-finite (loss|weights) by step \d+; no checkpoint yet: ", last)
    assert "Traceback" not in diverged.stderr
    assert not (tmp_path / "results.json").exists() and (tmp_path / "diverged.json").exists()
    resumed = scas(*args, "--learning_rate=0.05")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert np.isfinite(results["test_loss"]) and results["config"]["learning_rate"] == 0.05
    assert list(tmp_path.glob("diverged-at-step-*.json")) and not (tmp_path / "diverged.json").exists()


def searcher(method, tmp_path):
    """A tiny search of `method` (search phase only, 8 steps on 640 images) checkpointing every
    3 steps."""
    config = dataclasses.replace(configs.search_preset(method, "tiny"), target_sparsity=0.5,
                                 checkpoint_every_steps=3)
    splits = data.limit_images(data.load_splits(config.dataset, validation_fraction=config.validation_fraction), 640)
    return lambda folder: (smash.SmashSearch if method == "smash" else enas.EnasSearch)(config, splits, folder)


@pytest.mark.parametrize("method", ["enas_macro", "smash"])  # DARTS's: test_darts_search, through the CLI
def test_search_killed_inside_an_epoch_resumes_there_and_ends_as_an_uninterrupted_one(method, tmp_path):
    make = searcher(method, tmp_path)
    make(tmp_path / "whole").search()
    with killed_after_checkpoint(3), pytest.raises(Killed):
        make(tmp_path / "killed").search()
    resumed = make(tmp_path / "killed")
    with killed_after_checkpoint(3):
        resumed.search()
    assert resumed.loop.start_step == 3 and 3 < resumed.steps_per_epoch

    whole, killed = checkpointed_values(tmp_path / "whole"), checkpointed_values(tmp_path / "killed")
    assert whole.keys() == killed.keys()
    for name, value in whole.items():
        np.testing.assert_array_equal(value, killed[name], err_msg=name)
