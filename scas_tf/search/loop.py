"""What every searcher shares around its own steps: the run folder and splits, the resumable
epoch loop, and the common part of its results."""
import dataclasses
import logging
import time

import tensorflow as tf

from scas_tf.run_dir import RunDir

log = logging.getLogger("scas")


def checkpointing(run, **objects):
    """A checkpoint of `objects` and its manager in the run's folder (the last two kept)."""
    checkpoint = tf.train.Checkpoint(**objects)
    return checkpoint, tf.train.CheckpointManager(checkpoint, str(run.checkpoints), max_to_keep=2)


def search_epochs(search, run_epoch):
    """Resumes `search` at its last checkpoint, then runs `run_epoch(epoch)` until
    search.step reaches search.total_steps, timing each epoch into search.search_seconds and
    checkpointing at each epoch's end, so that a rerun resumes at the last finished epoch.
    TensorBoard summaries go to the run's folder."""
    if search.manager.latest_checkpoint:
        search.checkpoint.restore(search.manager.latest_checkpoint).assert_existing_objects_matched()
        log.info("resuming search in %s at step %d of %d", search.run.path, search.step, search.total_steps)
    writer = tf.summary.create_file_writer(str(search.run.tensorboard))
    with writer.as_default():
        while search.step < search.total_steps:
            started = time.perf_counter()
            run_epoch(search.step // search.steps_per_epoch)
            search.search_seconds.assign_add(time.perf_counter() - started)
            search.manager.save(checkpoint_number=search.step)
    writer.close()


def claim_run(config, load_splits, run_dir):
    """Ties run_dir to `config` (a rerun must match it); returns the run and the search's
    splits (`load_splits(validation_fraction)` gives a dataset's splits)."""
    run = RunDir(run_dir)
    run.claim(dataclasses.asdict(config))
    return run, load_splits(config.validation_fraction)


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
