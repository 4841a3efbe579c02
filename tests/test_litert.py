"""`scas export`: a trained run's LiteRT flatbuffer in every mode, measured in one process."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from scas_tf import architectures, configs, data, litert, report, trainer
from scas_tf.errors import ScasError

SCAS = [sys.executable, "-m", "scas_tf"]
TINY = dataclasses.replace(configs.TRAIN_PRESETS["tiny"], target_sparsity=0.9, epochs=1)
INT8_MAX_DROP = 0.02  # full-integer quantisation may cost up to 2 points of test accuracy


def scas(*args):
    return subprocess.run([*SCAS, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny small_cnn run at 0.9, exported through the CLI as int8 with sparse weights:
    (run folder, its results, export.json, the CLI's result)."""
    folder = tmp_path_factory.mktemp("litert") / "run"
    splits = data.load_splits(TINY.dataset, validation_fraction=TINY.validation_fraction)
    results = trainer.train(architectures.model_builder(TINY, splits.info), splits, TINY, folder)
    cli = scas("export", str(folder), "--quantize=int8")
    return folder, results, json.loads((folder / "export" / "export.json").read_text()), cli


def test_every_variant_converts_and_keeps_the_sparsity(exported):
    folder, results, export, cli = exported
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith(f"{folder / 'export' / 'model.tflite'}: int8-sparse, ")
    assert set(export["variants"]) == {v.name for v in litert.VARIANTS}
    variants = export["variants"]
    for name, figures in variants.items():
        assert figures["weight_sparsity"] == pytest.approx(results["weight_sparsity"], abs=1e-3), name
        assert any("1_thread" in timings for timings in figures["runtimes"].values()), name
    for quantize in ("float", "dynamic", "int8"):
        assert variants[f"{quantize}-sparse"]["bytes"] < variants[quantize]["bytes"] / 2
        assert variants[f"{quantize}-sparse"]["stored_weight_fraction"] == pytest.approx(0.1, abs=1e-3)
    assert (folder / "export" / "model.tflite").stat().st_size == variants["int8-sparse"]["bytes"]
    assert variants["float"]["test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-3)
    assert variants["int8"]["test_accuracy"] > results["test_accuracy"] - INT8_MAX_DROP


def test_float_export_computes_the_keras_models_logits(exported):
    folder, _, _, _ = exported
    splits = data.load_splits(TINY.dataset, validation_fraction=TINY.validation_fraction)
    images = splits.test.images[:200]
    keras_logits = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"](
        images=tf.constant(images))["logits"].numpy()
    for sparse in (False, True):
        content = litert.convert(folder / "saved_model", litert.Variant("none", sparse), images)
        for runtime in litert.RUNTIMES:
            np.testing.assert_allclose(litert.predict(content, runtime, images), keras_logits, atol=1e-4, rtol=1e-4)


def test_the_report_lists_the_exports(exported, tmp_path):
    folder, _, export, _ = exported
    report.write_report([folder], tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "## LiteRT exports (`scas export`)" in text
    kib = export["variants"]["float-sparse"]["bytes"] / 1024
    assert f"| {folder} | float-sparse | {kib:,.0f} | 0.900 |" in text


def test_bad_run_folders_fail_in_one_line(tmp_path):
    missing = scas("export", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1] == f"scas: error: not a run folder: {tmp_path / 'nowhere'}"
    with pytest.raises(ScasError, match="has no results.json: not a finished run"):
        litert.trained_network(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"final_dir": "final", "final": {}}))
    with pytest.raises(ScasError, match=r"final/saved_model is missing: the run's trained network was not exported"):
        litert.trained_network(tmp_path)
