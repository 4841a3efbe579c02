"""The README's first command: a real SCAS search on the embedded data, through the CLI, with a
quiet console (no TensorFlow C++ or library logging) and its result as the last line."""
import json
import re
import subprocess
import sys

from conftest import REPO

QUICK_START = "scas search --preset=quick"


def test_readme_starts_with_the_quick_search():
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert QUICK_START in first_block.splitlines()[0]


def test_quick_search_runs_quietly_and_ends_with_its_result(tmp_path):
    """One epoch of search and two of final training (the preset's 4 + 6 reach the README's
    97.7%: a measurement, not a test)."""
    args = QUICK_START.split()[1:] + ["--epochs=1", "--final_epochs=2", f"--output_dir={tmp_path}"]
    run = subprocess.run([sys.executable, "-m", "scas_tf", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]

    ours = {path.name for path in (REPO / "scas_tf").rglob("*.py")}
    for line in run.stderr.splitlines():
        assert "absl::InitializeLog" not in line and "cuda" not in line.lower(), line
        logged = re.match(r"[IWEF]\d{4} \S+ +\d+ (\S+):\d+\]", line)
        assert logged is None or logged.group(1) in ours, line  # no C++ or library logging
    assert re.search(r"epoch 1/\d+, step \d+/\d+: .* images/s, ETA ", run.stderr)

    out = run.stdout.strip().splitlines()
    assert out[0].startswith("enas_macro found enas_macro:")
    assert out[1].startswith(f"next: tensorboard --logdir={tmp_path}")
    assert re.match(r"trained from scratch at target sparsity 0.9: test accuracy 0\.\d+, params [\d,]+ \([\d,]+ "
                    r"non-zero\), MACs [\d,]+ dense / [\d,]+ sparse; results in ", out[-1])
    final = json.loads((tmp_path / "results.json").read_text())["final"]
    assert abs(final["weight_sparsity"] - 0.9) < 0.01 and final["test_accuracy"] > 0.5  # chance: 0.1
