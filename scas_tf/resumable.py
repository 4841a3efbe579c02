"""The resumable step loop the trainer and every searcher run.

A run is a sequence of epochs of optimiser steps, and a killed run must continue where it
stopped with the same result as an uninterrupted one: checkpoints are taken at each epoch's
end and every `checkpoint_every_steps` inside it, and whatever else a step depends on (its
minibatch, its sampled architecture) is a function of the step or lives in the checkpoint.
Nothing non-finite is ever checkpointed: the divergence guard runs before each save, so the
latest checkpoint is always one to resume from with a lower learning rate.
"""
import logging
import math
import time

import tensorflow as tf

from scas_tf import figures
from scas_tf.errors import ScasError
from scas_tf.run_dir import DIVERGED_FILE, read_json, write_json_atomic

log = logging.getLogger("scas")


class Diverged(ScasError):
    """A non-finite loss or weight stopped the run."""


def all_finite(variables):
    """One host round trip for all of them: the guard runs after every chunk of steps."""
    if not variables:
        return True
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables]))


def duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Resumable:
    """Checkpoints, the divergence guard, the run's wall time (a checkpointed variable, so a
    resumed run keeps counting) and the progress line of one run folder.

    The loop calls `next_chunk` for how many steps to run at once, `after_chunk` after them
    and `end_epoch` after each epoch's own work (validation, a controller phase). A periodic
    checkpoint never falls on an epoch's last step: a checkpoint at an epoch boundary always
    follows that epoch's own work, so resuming never skips it."""

    def __init__(self, run, config, total_steps, steps_per_epoch, clock, **objects):
        """`objects` are checkpointed; objects[clock] is the float64 variable of wall time."""
        self.run, self.total_steps, self.steps_per_epoch = run, total_steps, steps_per_epoch
        self.every, self.log_every = config.checkpoint_every_steps, config.log_every_steps
        self.batch_size, self.seconds = config.batch_size, objects[clock]
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(run.checkpoints), max_to_keep=2)
        self.start_clock(0)

    def start_clock(self, step):
        self.start_step = self.saved_step = step
        self.started = self.marked = time.perf_counter()

    def run_epochs(self, current_step, run_epoch, dashboard=None):
        """Resumes at the latest checkpoint, then runs run_epoch(epoch) until current_step()
        reaches the last step, with TensorBoard summaries going to the run's folder; a fresh
        run starts them with its `dashboard` (figures.write_dashboard's title and charts)."""
        fresh = not self.manager.latest_checkpoint
        if not fresh:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
            log.info("resuming %s at step %d of %d", self.run.path, current_step(), self.total_steps)
        diverged = self.run.path / DIVERGED_FILE
        if diverged.exists():  # its claim accepted the new learning rate; it is history now
            diverged.rename(diverged.with_name(f"diverged-at-step-{read_json(diverged)['step']}.json"))
        self.start_clock(current_step())
        writer = tf.summary.create_file_writer(str(self.run.tensorboard))
        with writer.as_default():
            if fresh and dashboard:
                figures.write_dashboard(*dashboard)
            while current_step() < self.total_steps:
                run_epoch(current_step() // self.steps_per_epoch)
        writer.close()

    def next_chunk(self, step):
        """Steps to run before the next log point, periodic checkpoint or the epoch's end."""
        epoch_end = (step // self.steps_per_epoch + 1) * self.steps_per_epoch
        to_checkpoint = self.every - step % self.every if self.every else epoch_end - step
        return min(self.log_every, epoch_end - step, to_checkpoint)

    def after_chunk(self, step, loss, variables):
        """Stops a diverged run; takes the periodic checkpoint when one is due."""
        self.guard(step, loss, variables)
        if self.every and step % self.every == 0 and step % self.steps_per_epoch:
            self.save(step)

    def end_epoch(self, step, loss, variables, summary):
        """Checks and checkpoints the finished epoch; logs `summary` with speed and ETA."""
        self.guard(step, loss, variables)
        self.save(step)
        done = step - self.start_step
        elapsed = time.perf_counter() - self.started
        speed = f"{done * self.batch_size / elapsed:,.0f} images/s" if done and elapsed else ""
        eta = f", ETA {duration(elapsed / done * (self.total_steps - step))}" if done and step < self.total_steps else ""
        log.info("epoch %d/%d, step %d/%d: %s (%s%s)", step // self.steps_per_epoch,
                 self.total_steps // self.steps_per_epoch, step, self.total_steps, summary, speed, eta)

    def save(self, step):
        now = time.perf_counter()
        self.seconds.assign_add(now - self.marked)
        self.marked = now
        self.manager.save(checkpoint_number=step)
        self.saved_step = step

    def guard(self, step, loss, variables):
        """Raises Diverged (after writing diverged.json) on a non-finite loss or weight."""
        if math.isfinite(float(loss)) and all_finite(variables):
            return
        what = "loss" if not math.isfinite(float(loss)) else "weights"
        latest = self.manager.latest_checkpoint
        write_json_atomic(self.run.path / DIVERGED_FILE, {"step": step, "non_finite": what,
                                                          "checkpoint": latest, "checkpoint_step": self.saved_step})
        where = (f"the last checkpoint (step {self.saved_step}) is finite: lower --learning_rate and rerun "
                 f"on {self.run.path} to resume from it" if latest else
                 f"no checkpoint yet: lower --learning_rate and rerun on {self.run.path} to start again")
        raise Diverged(f"the run diverged: non-finite {what} by step {step}; {where}")
