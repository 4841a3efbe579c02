"""Copies a sweep's small files into the work tree, for committing each target as it finishes.

    python experiments/collect_results.py ../sweeps/darts-mnist experiments/results/mnist/darts

From the sweep folder: `sweep.json` and `commands.txt`; from every finished target folder
(one with results.json), `config.json`, `results.json` and `architecture.txt`: what
`scas report` reads and what a reader needs to retrain the architecture. No checkpoints,
event files or SavedModels. Unfinished targets are left out; files are written atomically.
"""
import sys
from pathlib import Path

from scas_tf.run_dir import write_text_atomic

SWEEP_FILES = ("sweep.json", "commands.txt")
TARGET_FILES = ("config.json", "results.json", "architecture.txt")


def copy_files(source, destination, names):
    destination.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (source / name).exists():
            write_text_atomic(destination / name, (source / name).read_text())


def collect(sweep, destination):
    """Copies the sweep's and its finished targets' files; returns the targets copied."""
    if not (sweep / "sweep.json").exists():
        raise SystemExit(f"collect_results: {sweep} is not a sweep folder (no sweep.json)")
    copy_files(sweep, destination, SWEEP_FILES)
    finished = sorted(p.parent for p in sweep.glob("s*/results.json"))
    for target in finished:
        copy_files(target, destination / target.name, TARGET_FILES)
    return [target.name for target in finished]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python experiments/collect_results.py SWEEP_DIR DESTINATION")
    copied = collect(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{sys.argv[2]}: {len(copied)} finished target(s): {', '.join(copied) or 'none'}")
