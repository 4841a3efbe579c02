"""`scas report` on hand-written run folders: Table 1's choice of rows, its CSV and Markdown,
the Pareto front, and readable PNG and SVG figures."""
import csv
import json
import subprocess
import sys

import pytest

from conftest import REPO
from scas_tf import report
from scas_tf.errors import ScasError

SCAS = [sys.executable, "-m", "scas_tf"]


def write_run(folder, target, accuracy, params=1_000_000, nonzero=None, dense_macs=50_000_000, sparse_macs=None,
              method="enas_macro", dataset="mnist", seed=0, search=True):
    """A finished run folder as `scas search` (or, search=False, `scas train`) leaves it."""
    folder.mkdir(parents=True)
    config = {"dataset": dataset, "target_sparsity": target, "seed": seed,
              **({"method": method} if search else {"arch": method})}
    final = {"test_accuracy": accuracy, "params": params,
             "nonzero_params": nonzero if nonzero is not None else round(params * (1 - target)),
             "dense_macs": dense_macs,
             "sparse_macs": sparse_macs if sparse_macs is not None else round(dense_macs * (1 - target)),
             "train_seconds": 60.0, "machine": {"cpu": "Test CPU", "cpu_cores": 2, "accelerators": {}},
             "data_source": f"/data/{dataset} (partial: 10 of 60 training images)"}
    results = {"method": method, "architecture": f"{method}:0 1", "search_seconds": 30.0, "final": final}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "results.json").write_text(json.dumps(results if search else final))
    return folder


def rows_by_method(rows):
    return {row.method: row for row in rows}


def test_table1_takes_the_sparsest_run_within_one_point(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "s0", 0.0, 0.990)
    write_run(sweep / "s0.5", 0.5, 0.985)
    write_run(sweep / "s0.7", 0.7, 0.9801)  # 0.99 points below: still in
    write_run(sweep / "s0.9", 0.9, 0.970)
    (row,), without = report.table1(report.find_runs([sweep]))
    assert without == []
    assert row.chosen.target == 0.7 and row.baseline.target == 0.0
    assert row.params_reduction == pytest.approx(1_000_000 / 300_000)
    assert row.macs_reduction == pytest.approx(50_000_000 / 15_000_000)
    assert row.note == ""


def test_table1_without_a_sparse_run_within_one_point_or_with_one_run(tmp_path):
    """Also: a search still running (config, no results) is not a run, nor its finished final training."""
    write_run(tmp_path / "a" / "s0", 0.0, 0.99, method="darts")
    write_run(tmp_path / "a" / "s0.5", 0.5, 0.979, method="darts")  # 1.1 points below
    write_run(tmp_path / "b" / "s0", 0.0, 0.99, method="smash")
    write_run(tmp_path / "c" / "s0.9", 0.9, 0.99, method="enas_micro")
    unfinished = tmp_path / "c" / "s0.5"
    write_run(unfinished / "final", 0.5, 0.99, method="enas_micro:0 1", search=False)
    (unfinished / "config.json").write_text(json.dumps({"dataset": "mnist", "target_sparsity": 0.5}))
    rows, without = report.table1(report.find_runs([tmp_path]))
    rows = rows_by_method(rows)
    assert rows["darts"].chosen is rows["darts"].baseline and rows["darts"].note == "no sparse run within 1 point"
    assert rows["darts"].params_reduction == 1.0
    assert rows["smash"].note == "only the 0% run"
    assert without == [f"enas_micro on mnist ({tmp_path / 'c'})"]


def test_table1_ties_and_series(tmp_path):
    """Two 0% runs of one series: the more accurate is the baseline; two runs at the chosen
    target: the one with fewer non-zero params; another seed is another series."""
    write_run(tmp_path / "x" / "s0", 0.0, 0.990)
    write_run(tmp_path / "y" / "s0", 0.0, 0.992)
    write_run(tmp_path / "x" / "s0.8", 0.8, 0.985, nonzero=210_000)
    write_run(tmp_path / "y" / "s0.8", 0.8, 0.986, nonzero=200_000)
    write_run(tmp_path / "z" / "s0", 0.0, 0.95, seed=1)
    rows, _ = report.table1(report.find_runs([tmp_path]))
    first, other_seed = rows
    assert first.baseline.test_accuracy == 0.992
    assert first.chosen.folder == tmp_path / "y" / "s0.8"
    assert other_seed.baseline.test_accuracy == 0.95 and other_seed.note == "only the 0% run"


def test_pareto_front():
    def run(accuracy, cost):
        return report.Run(folder=None, series="", dataset="mnist", method="m", target=0.0, test_accuracy=accuracy,
                          params=cost, nonzero_params=cost, dense_macs=cost, sparse_macs=cost, search_seconds=0.0,
                          train_seconds=0.0, machine="", architecture="", data_source="")
    a, b, c, d = run(0.99, 100), run(0.98, 10), run(0.97, 50), run(0.99, 200)
    assert report.pareto_front([a, b, c, d], lambda r: r.nonzero_params) == [a, b]


def test_report_through_the_cli_writes_tables_figures_and_report(tmp_path):
    for method, accuracies in (("enas_macro", (0.99, 0.985, 0.97)), ("darts", (0.992, 0.99, 0.989))):
        for target, accuracy in zip((0.0, 0.5, 0.9), accuracies):
            write_run(tmp_path / "sweeps" / method / f"s{target:g}", target, accuracy, method=method)
    (tmp_path / "sweeps" / "darts" / "commands.txt").write_text("scas sweep --method=darts --targets=0,0.5,0.9\n")
    write_run(tmp_path / "runs" / "small_cnn", 0.9, 0.98, method="small_cnn", search=False)
    output = tmp_path / "report"
    output.mkdir()
    (output / "reading.md").write_text("DARTS keeps its accuracy longest.\n")
    result = subprocess.run([*SCAS, "report", str(tmp_path / "sweeps"), str(tmp_path / "runs"), f"--output={output}"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"{output / 'report.md'}")
    table = list(csv.DictReader((output / "table1.csv").open()))
    assert [(r["method"], r["target"]) for r in table] == [("enas_macro", "0.5"), ("darts", "0.9")]
    assert float(table[1]["params_reduction"]) == pytest.approx(10.0)
    markdown = (output / "table1.md").read_text()
    assert "| mnist | darts | 1M | 0.1M | 10.0x | 50M | 5M | 10.0x | 99.20% | 98.90% | 0.9 |" in markdown
    assert "| 0.62M | 0.1M | 6.4x | 1,620M | 312M | 5.2x |" in markdown  # the paper's MNIST DARTS row
    text = (output / "report.md").read_text()
    assert "scas sweep --method=darts --targets=0,0.5,0.9" in text and "Test CPU, 2 cores" in text
    assert "small_cnn on mnist" in text  # a series without a 0% run is named, not dropped
    assert "## Reading\n\nDARTS keeps its accuracy longest.\n" in text
    import matplotlib.image
    for name in ("figure4_mnist", "pareto_mnist"):
        assert (output / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(output / f"{name}.png").shape
        assert width > 1000 and height > 400
        assert (output / f"{name}.svg").read_text().lstrip().startswith("<?xml")
        assert f"({name}.png)\n\n*mnist data: /data/mnist (partial: 10 of 60 training images)*\n" in text
    assert list((output / "tensorboard").glob("events.out.tfevents.*"))


def test_report_errors_are_one_line(tmp_path):
    with pytest.raises(ScasError, match="no finished run"):
        report.write_report([tmp_path], tmp_path / "out")
    result = subprocess.run([*SCAS, "report", str(tmp_path / "missing")], capture_output=True, text=True, cwd=REPO,
                            timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"scas: error: not a folder: {tmp_path / 'missing'}"


def test_series_ignore_log_intervals_and_fields_added_since(tmp_path):
    """A run whose config predates a field (search_images) and logs more often is of the same
    series as one with that field at its default; another search_images is another series."""
    old = write_run(tmp_path / "old" / "s0", 0.0, 0.99)
    new = write_run(tmp_path / "new" / "s0.5", 0.5, 0.985)
    other = write_run(tmp_path / "other" / "s0.5", 0.5, 0.985)
    for folder, extra in ((new, {"search_images": 0, "log_every_steps": 7}), (other, {"search_images": 100})):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **extra}))
    runs = {run.folder: run for run in report.find_runs([tmp_path])}
    assert runs[old].series == runs[new].series != runs[other].series
