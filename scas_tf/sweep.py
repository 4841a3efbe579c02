"""A sweep: one search per target sparsity, as the paper's results are made.

A sweep folder holds `sweep.json` (the search config without its target) and one complete
`scas search` run folder per target, `s<target>/`. Each target is claimed by holding its
folder (run_dir.hold), so several processes, or machines sharing the folder, can work through
the same targets: each runs the ones nobody else holds, skips finished ones, and resumes an
interrupted one.
"""
import dataclasses
import logging
from pathlib import Path

import tensorflow as tf

from scas_tf.errors import ScasError
from scas_tf.run_dir import FolderInUse, claim_config, field_defaults, held, read_json

log = logging.getLogger("scas")


def parse_targets(text):
    """'0,0.1,0.5' -> (0.0, 0.1, 0.5): distinct sparsity targets in [0, 1), sorted."""
    try:
        targets = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ScasError(f"--targets must be comma-separated numbers, got {text!r}") from None
    if not targets:
        raise ScasError("--targets is empty")
    bad = [t for t in targets if not 0.0 <= t < 1.0]
    if bad:
        raise ScasError(f"target sparsity must be in [0, 1), got {bad[0]:g}")
    return tuple(sorted(set(targets)))


def target_dir(sweep_dir, target):
    return Path(sweep_dir) / f"s{target:g}"


def sweep_config(config):
    """What makes two invocations the same sweep: the search config, its target aside."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "target_sparsity"}


def claim_sweep(config, sweep_dir):
    """Writes sweep.json, or checks that the sweep folder was made with the same config."""
    sweep_dir = Path(sweep_dir)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ScasError(f"output_dir is not a directory: {sweep_dir}")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    claim_config(sweep_dir / "sweep.json", sweep_config(config), field_defaults(config))


def run_sweep(config, targets, sweep_dir, run_search):
    """Runs `run_search(config at target, run folder)` for each target not finished and not
    held by another process; returns {target: (status, results or holder)} with status one of
    'finished', 'ran', 'busy'."""
    claim_sweep(config, sweep_dir)
    outcome = {}
    for target in targets:
        folder = target_dir(sweep_dir, target)
        try:
            with held(folder):
                outcome[target] = run_target(config, target, folder, run_search)
        except FolderInUse as e:
            log.info("skipping target %g: %s", target, e)
            outcome[target] = ("busy", str(e))
    return outcome


def run_target(config, target, folder, run_search):
    """(status, results) of one target whose folder this process holds."""
    if (folder / "results.json").exists():  # checked while held: no one is still writing it
        return "finished", read_json(folder / "results.json")
    log.info("target sparsity %g in %s", target, folder)
    results = run_search(dataclasses.replace(config, target_sparsity=target), folder)
    tf.keras.backend.clear_session()  # the next target builds its networks afresh
    return "ran", results
