"""`scas sweep`: a killed sweep resumes without redoing finished targets, processes sharing a
sweep folder never run one target twice, and a sweep folder keeps its configuration."""
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import nbclient
import nbformat
import pytest

from conftest import REPO, charts_without_data, summaries
from scas_tf import configs, report, run_dir, sweep
from scas_tf.search import enas
from scas_tf.errors import ScasError

SCAS = [sys.executable, "-m", "scas_tf"]
# The notebook's sweep (experiments/scas_colab.ipynb), so that its test finds this one's work done.
TINY_SWEEP = ["sweep", "--method=enas_macro", "--preset=tiny", "--targets=0,0.9"]


def scas(*args):
    return subprocess.run([*SCAS, *args], capture_output=True, text=True, cwd=REPO, timeout=600)


def test_targets_parse_and_fail_in_one_line():
    assert sweep.parse_targets("0.9, 0,0.5,0.5") == (0.0, 0.5, 0.9)
    with pytest.raises(ScasError, match=r"target sparsity must be in \[0, 1\), got 1"):
        sweep.parse_targets("0,1")
    with pytest.raises(ScasError, match="--targets must be comma-separated numbers, got 'a,b'"):
        sweep.parse_targets("a,b")


def test_a_held_folder_is_refused_naming_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from scas_tf import run_dir
        run_dir.hold({str(tmp_path)!r})
        print("held", flush=True)
        time.sleep(60)
        """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(run_dir.FolderInUse, match=rf"{tmp_path} is in use by pid {holder.pid} on "):
        run_dir.hold(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_dir.held(tmp_path):  # the killed holder's lock is gone with it
        pass


def test_processes_sharing_a_sweep_run_each_target_once(tmp_path):
    """Two processes sweep the same targets at once; each target's search (a stand-in that
    takes a second) runs in exactly one of them."""
    script = textwrap.dedent(f"""
        import json, os, sys, time
        from scas_tf import sweep
        from scas_tf.search.enas import EnasConfig

        def search(config, folder):
            with open({str(tmp_path / 'ran.log')!r}, "a") as log:
                log.write(f"{{config.target_sparsity}} {{os.getpid()}}\\n")
            time.sleep(1.0)
            results = {{"final": {{"target": config.target_sparsity}}}}
            (folder / "results.json").write_text(json.dumps(results))
            return results

        outcome = sweep.run_sweep(EnasConfig(), (0.0, 0.5, 0.9), {str(tmp_path / 'sweep')!r}, search)
        print(json.dumps({{str(t): status for t, (status, _) in outcome.items()}}))
        """)
    processes = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outcomes = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in processes]
    ran = sorted(line.split()[0] for line in (tmp_path / "ran.log").read_text().splitlines())
    assert ran == ["0.0", "0.5", "0.9"], outcomes
    for target in ("0.0", "0.5", "0.9"):
        assert sorted(o[target] for o in outcomes) in (["busy", "ran"], ["finished", "ran"]), outcomes
        assert (tmp_path / "sweep" / f"s{float(target):g}" / "results.json").exists()


@pytest.fixture(scope="module")
def killed_sweep(tmp_path_factory):
    """The notebook's tiny sweep, killed once its second target has started, then re-run:
    (folder, its arguments, the re-run's result, the first target's results.json mtime)."""
    folder = tmp_path_factory.mktemp("sweeps") / "tiny"
    args = [*TINY_SWEEP, f"--output_dir={folder}"]
    process = subprocess.Popen([*SCAS, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while not (folder / "s0.9" / "config.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the sweep ended before it could be killed"
    assert not (folder / "s0.9" / "results.json").exists()
    finished = (folder / "s0" / "results.json").stat().st_mtime_ns
    return folder, args, scas(*args), finished


def test_killed_sweep_resumes_without_redoing_finished_targets(killed_sweep):
    folder, args, resumed, finished = killed_sweep
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stdout.strip().splitlines()
    assert lines[0].startswith("target 0: finished: test accuracy")
    assert lines[1].startswith("target 0.9: ran: test accuracy")
    assert lines[-1].startswith(f"sweep {folder}: 2 of 2 targets finished")
    assert (folder / "s0" / "results.json").stat().st_mtime_ns == finished
    results = json.loads((folder / "s0.9" / "results.json").read_text())
    assert results["final"]["config"]["target_sparsity"] == 0.9
    assert "scas " + " ".join(args) in (folder / "commands.txt").read_text()


def test_every_target_is_a_tensorboard_run_with_the_same_tags(killed_sweep):
    """TensorBoard on a sweep folder shows each target's search as a run: the same tags in
    each (so none names its target or folder) and curves that compare, the dashboard's charts
    all with data, and the controller's policy images."""
    folder, *_ = killed_sweep
    zero, sparse = (summaries(folder / target / "tensorboard").keys() for target in ("s0", "s0.9"))
    assert zero == sparse
    assert {"controller/policy/ops", "controller/policy/skips", "custom_scalars__config__"} <= zero
    assert not charts_without_data(enas.dashboard("enas_macro"), zero)


def test_sweep_folder_keeps_its_config(killed_sweep):
    folder, args, _, _ = killed_sweep
    other = scas(*args, "--seed=1")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert other.stderr.strip().splitlines()[-1].startswith(
        f"scas: error: {folder} holds a run with another config (seed=0 there vs 1 now)")
    target = scas(*args, "--target_sparsity=0.5")
    assert target.stderr.strip().splitlines()[-1] == "scas: error: `scas sweep` takes --targets, not --target_sparsity"


def test_notebook_runs_headless(killed_sweep, tmp_path, monkeypatch):
    """experiments/scas_colab.ipynb, its install cell skipped, on the CPU; its sweep is the
    fixture's, so it finds both targets finished and goes on to TensorBoard and the report."""
    folder, _, _, _ = killed_sweep
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the package as CI installs it, were it not installed
    notebook = nbformat.read(REPO / "experiments" / "scas_colab.ipynb", as_version=4)
    notebook.cells = [c for c in notebook.cells if "install" not in c.metadata.get("tags", [])]
    env_cell = nbformat.v4.new_code_cell(f"import os; os.environ['SCAS_NOTEBOOK_SWEEP'] = {str(folder)!r}")
    notebook.cells.insert(0, env_cell)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "target 0: finished" in outputs and "target 0.9: finished" in outputs
    assert (folder / "report" / "figure4_mnist_mini.png").exists()
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2


def test_collected_results_report_as_the_sweep_does(killed_sweep, tmp_path, monkeypatch):
    """experiments/collect_results.py copies what the report reads (and nothing of an
    unfinished target, checkpoints or event files); the copies give the sweep's own Table 1."""
    sweep_folder = tmp_path / "sweep"
    shutil.copytree(killed_sweep[0], sweep_folder, ignore=shutil.ignore_patterns("report"))
    (sweep_folder / "s0.5").mkdir()
    (sweep_folder / "s0.5" / "config.json").write_text("{}")  # a target still running
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # as experiments/reproduce_table1.sh runs it
    collected = subprocess.run([sys.executable, "experiments/collect_results.py", str(sweep_folder),
                                str(tmp_path / "results")], capture_output=True, text=True, cwd=REPO)
    assert collected.returncode == 0, collected.stderr
    assert collected.stdout.strip() == f"{tmp_path / 'results'}: 2 finished target(s): s0, s0.9"
    files = sorted(str(p.relative_to(tmp_path / "results")) for p in (tmp_path / "results").rglob("*"))
    assert files == sorted(["commands.txt", "sweep.json", "s0", "s0.9", *(
        f"{target}/{name}" for target in ("s0", "s0.9") for name in ("architecture.txt", "config.json", "results.json"))])
    report.write_report([sweep_folder], tmp_path / "from_runs")
    report.write_report([tmp_path / "results"], tmp_path / "from_copies")
    from_copies = (tmp_path / "from_copies" / "table1.md").read_text()
    from_runs = (tmp_path / "from_runs" / "table1.md").read_text()
    assert from_copies.replace(str(tmp_path / "results"), "FOLDER") == from_runs.replace(str(sweep_folder), "FOLDER")


@pytest.mark.parametrize("method", configs.SEARCH_METHODS)
def test_sweep_preset_is_the_cpu_preset_on_a_smaller_budget(method):
    """The sweep preset keeps its method's cpu structure; only budget fields differ."""
    cpu, small = (dataclasses.asdict(configs.search_preset(method, p)) for p in ("cpu", "sweep"))
    changed = {k for k in cpu if cpu[k] != small[k]}
    budget = {"search_images", "epochs", "final_epochs", "final_filters", "final_num_layers", "N", "N_max",
              "num_random", "num_perturbed", "num_markov", "score_images"}
    assert "search_images" in changed and changed <= budget, changed
    assert small["final_epochs"] == 2 and small["dataset"] == "mnist"
