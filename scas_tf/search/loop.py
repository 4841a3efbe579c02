"""The resumable epoch loop that every searcher runs."""
import logging
import time

import tensorflow as tf

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
