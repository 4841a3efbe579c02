"""What every searcher shares around its own steps (the resumable loop is resumable.py's): the
run folder and splits, and the common part of its results."""
import dataclasses

from scas_tf import data
from scas_tf.run_dir import RunDir


def claim_run(config, run_dir):
    """Ties run_dir to `config` (a rerun must match it); returns the run."""
    run = RunDir(run_dir)
    run.claim(config)
    return run


def search_splits(config, load_splits):
    """(the splits the search runs on: train + validation cut to config.search_images in
    proportion, when set; the whole splits, which the final training starts from)."""
    splits = load_splits(config.validation_fraction)
    return data.limit_images(splits, config.search_images), splits


def final_splits(config, splits, load_splits):
    """The splits of the final training: the search's, unless its validation fraction differs."""
    if config.final_validation_fraction == config.validation_fraction:
        return splits
    return load_splits(config.final_validation_fraction)


def results_of(search, config, architecture, final, final_dir, **specific):
    """results.json of a search: what every searcher reports, then its own figures."""
    return {"method": config.method, "architecture": architecture,
            "search_seconds": float(search.search_seconds.numpy()), "search_steps": search.step,
            "search_pruning": dataclasses.asdict(search.pruning_config), **specific,
            "final_dir": final_dir, "final": {k: v for k, v in final.items() if k != "layers"}}
