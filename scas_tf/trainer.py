"""Trains a fixed architecture from scratch under a sparsity target (the SCAS "trainer").

A Keras custom training loop under a tf.distribute strategy: SGD with momentum, cosine
learning rate (with optional warm-up, or with warm restarts: SGDR), L2 weight decay on kernels
(or on every variable, as ENAS's reference), optional label smoothing and gradient clipping.
After every optimiser step the pruning step runs (`Pruner.update_masks`) from the optimiser's
own step counter. Checkpoints make a re-run on the same folder resume;
the result is a results JSON and a serving SavedModel of the stripped model (export.py).
"""
import dataclasses
import logging
import math
import time

import tensorflow as tf
import tf_keras as keras

from scas_tf import accounting, data, distribute, pruning
from scas_tf.config import TrainConfig  # noqa: F401 (the trainer's config, exported here)
from scas_tf.export import save_serving_model
from scas_tf.models import layers
from scas_tf.resumable import Diverged, Resumable
from scas_tf.run_dir import RunDir, write_json_atomic

log = logging.getLogger("scas")


def cosine_schedule(learning_rate, min_learning_rate, total_steps, warmup_steps=0, restart_steps=0,
                    restart_mult=2.0):
    """A cosine learning rate: one period over the run (optionally after a linear warm-up),
    or, with `restart_steps`, warm restarts (SGDR: periods of restart_steps, restart_steps *
    restart_mult, ..., each from the peak down to the minimum)."""
    alpha = min_learning_rate / learning_rate
    if restart_steps:
        return keras.optimizers.schedules.CosineDecayRestarts(
            learning_rate, first_decay_steps=restart_steps, t_mul=restart_mult, m_mul=1.0, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=max(1, total_steps - warmup_steps), alpha=alpha,
        warmup_target=learning_rate if warmup_steps else None, warmup_steps=warmup_steps)


def make_sgd(learning_rate, min_learning_rate, total_steps, warmup_steps=0, momentum=0.9,
             nesterov=True, grad_clip_norm=0.0, restart_steps=0, restart_mult=2.0):
    """SGD with momentum and optional clipping on `cosine_schedule`."""
    schedule = cosine_schedule(learning_rate, min_learning_rate, total_steps, warmup_steps, restart_steps,
                               restart_mult)
    return keras.optimizers.SGD(schedule, momentum=momentum, nesterov=nesterov,
                                global_clipnorm=grad_clip_norm or None)


def is_kernel(variable):
    """Whether L2 decay applies: conv, depthwise and dense kernels (rank >= 2), not BN or biases."""
    return variable.shape.rank >= 2


def decayed_variables(model, decay_all_variables=False):
    """The variables L2 decay applies to: kernels, or every trainable variable."""
    return [v for v in model.trainable_variables if decay_all_variables or is_kernel(v)]


def cross_entropy(labels, logits, label_smoothing=0.0):
    """Per-example softmax cross-entropy against (optionally smoothed) one-hot labels."""
    num_classes = logits.shape[-1]
    targets = tf.one_hot(labels, num_classes) * (1.0 - label_smoothing) + label_smoothing / num_classes
    return tf.nn.softmax_cross_entropy_with_logits(targets, logits)


def regularized_loss(model, per_example, weight_decay, global_batch_size, decay_all_variables=False,
                     decayed=None):
    """One replica's share of the mean loss plus L2 decay (weight_decay/2 * sum(w^2)) on the
    model's kernels, or on all its variables, or on `decayed`."""
    if decayed is None:
        decayed = decayed_variables(model, decay_all_variables)
    decay = weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in decayed])
    return (tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            + tf.nn.scale_regularization_loss(decay))


def pruned_sgd_step(model, forward, labels, optimizer, pruner, weight_decay, global_batch_size,
                    label_smoothing=0.0, auxiliary_weight=0.0, decay_all_variables=False):
    """One replica's optimiser step on the loss of `forward()` plus L2 decay, with pruned
    weights' gradients blocked. Shared by the trainer and the searchers' weight steps.
    `forward()` returns logits, or [logits, auxiliary logits] whose loss weighs
    auxiliary_weight. Returns (per-example loss, logits)."""
    with tf.GradientTape() as tape:
        logits = forward()
        auxiliary = None
        if isinstance(logits, (list, tuple)):
            logits, auxiliary = logits
        per_example = cross_entropy(labels, logits, label_smoothing)
        objective = per_example
        if auxiliary is not None:
            objective = per_example + auxiliary_weight * cross_entropy(labels, auxiliary, label_smoothing)
        loss = regularized_loss(model, objective, weight_decay, global_batch_size, decay_all_variables)
    variables = model.trainable_variables
    apply_pruned_gradients(optimizer, pruner, tape.gradient(loss, variables), variables)
    return per_example, logits


def apply_pruned_gradients(optimizer, pruner, gradients, variables):
    """The optimiser step with pruned weights' gradients blocked."""
    gradients = pruner.mask_gradients(gradients, variables)
    optimizer.apply_gradients((g, v) for g, v in zip(gradients, variables) if g is not None)


class Trainer:
    """Builds model, optimiser and pruner under a strategy and runs the training loop."""

    def __init__(self, model_fn, splits, config, run_dir, strategy=None):
        self.config, self.splits, self.run = config, splits, RunDir(run_dir)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.steps_per_epoch = data.steps_per_epoch(splits.train, config.batch_size)
        self.total_steps = config.epochs * self.steps_per_epoch
        self.pruning_config = config.pruning_config(self.total_steps)
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = model_fn()
            # A model with an auxiliary head outputs [logits, auxiliary logits]; evaluation,
            # accounting and export see the logits alone.
            self.inference_model = (keras.Model(self.model.inputs, self.model.outputs[0])
                                    if len(self.model.outputs) > 1 else self.model)
            self.optimizer = make_sgd(
                config.learning_rate, config.min_learning_rate, self.total_steps,
                int(config.warmup_epochs * self.steps_per_epoch), config.momentum, config.nesterov,
                config.grad_clip_norm, round(config.lr_restart_epochs * self.steps_per_epoch),
                config.lr_restart_mult)
            self.optimizer.build(self.model.trainable_variables)  # else the first trace makes slots
            self.pruner = pruning.Pruner(self.model, self.pruning_config)
            self.train_loss = keras.metrics.Mean()
            self.train_accuracy = keras.metrics.SparseCategoricalAccuracy()
            self.eval_loss = keras.metrics.SparseCategoricalCrossentropy(from_logits=True)
            self.eval_accuracy = keras.metrics.SparseCategoricalAccuracy()
            self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
            random = layers.random_generators(self.model)
        self.loop = Resumable(self.run, config, self.total_steps, self.steps_per_epoch, "train_seconds",
                              model=self.model, optimizer=self.optimizer, train_seconds=self.train_seconds,
                              random=random)

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def replica_train_step(self, images, labels):
        per_example, logits = pruned_sgd_step(
            self.model, lambda: self.model(images, training=True), labels, self.optimizer, self.pruner,
            self.config.weight_decay, self.config.batch_size, self.config.label_smoothing,
            self.config.auxiliary_weight, self.config.decay_all_variables)
        self.train_loss.update_state(per_example)
        self.train_accuracy.update_state(labels, logits)

    @tf.function
    def train_steps(self, iterator, num_steps):
        """num_steps optimiser steps, each followed by the pruning step, in one graph call."""
        for _ in tf.range(num_steps):
            self.strategy.run(self.replica_train_step, args=next(iterator))
            self.pruner.update_masks(self.optimizer.iterations)

    @tf.function
    def eval_step(self, batch):
        def replica_eval_step(images, labels):
            logits = self.inference_model(images, training=False)
            self.eval_loss.update_state(labels, logits)
            self.eval_accuracy.update_state(labels, logits)
        self.strategy.run(replica_eval_step, args=batch)

    def evaluate(self, split):
        self.eval_loss.reset_state()
        self.eval_accuracy.reset_state()
        dataset = data.eval_dataset(split, self.splits.info, self.config.batch_size * 2)
        for batch in self.strategy.experimental_distribute_dataset(dataset):
            self.eval_step(batch)
        return float(self.eval_loss.result()), float(self.eval_accuracy.result())

    def fit(self):
        """Trains to the last step, resuming from the latest checkpoint."""
        self.loop.run_epochs(lambda: self.step, self.train_epoch)

    def train_epoch(self, epoch):
        start_batch = self.step - epoch * self.steps_per_epoch
        dataset = data.train_dataset(self.splits.train, self.splits.info, self.config.batch_size,
                                     self.config.seed, epoch, start_batch, cutout_size=self.config.cutout)
        # The reference's schedule: drop-path rate drop_path * epoch / epochs.
        layers.set_drop_path_rate(self.model, self.config.drop_path * epoch / self.config.epochs)
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        while self.step < (epoch + 1) * self.steps_per_epoch:
            self.train_loss.reset_state()
            self.train_accuracy.reset_state()
            self.train_steps(iterator, tf.constant(self.loop.next_chunk(self.step)))
            self.log_train_chunk()
            self.loop.after_chunk(self.step, self.train_loss.result(), self.model.trainable_variables)
        self.end_epoch()

    def log_train_chunk(self):
        step = self.step
        tf.summary.scalar("train/loss", self.train_loss.result(), step)
        tf.summary.scalar("train/accuracy", self.train_accuracy.result(), step)
        tf.summary.scalar("train/learning_rate", self.optimizer.learning_rate, step)
        tf.summary.scalar("sparsity/scheduled", self.pruner.sparsity_at(step), step)
        sparsity = self.pruner.sparsity()
        tf.summary.scalar("sparsity/achieved", sparsity, step)
        log.debug("step %d/%d loss %.4f accuracy %.4f sparsity %.3f", step, self.total_steps,
                  self.train_loss.result(), self.train_accuracy.result(), sparsity)

    def end_epoch(self):
        step = self.step
        val_loss, val_accuracy = self.evaluate(self.splits.validation)
        tf.summary.scalar("validation/loss", val_loss, step)
        tf.summary.scalar("validation/accuracy", val_accuracy, step)
        report = self.pruner.report()
        for weight in report:
            tf.summary.scalar(f"sparsity/layer/{weight.name}", weight.sparsity, step)
        self.loop.end_epoch(step, val_loss, self.model.trainable_variables, (
            f"loss {self.train_loss.result():.4f} accuracy {self.train_accuracy.result():.4f} sparsity "
            f"{pruning.overall_sparsity(report):.3f}, validation loss {val_loss:.4f} accuracy {val_accuracy:.4f}"))

    def results(self):
        val_loss, val_accuracy = self.evaluate(self.splits.validation)
        test_loss, test_accuracy = self.evaluate(self.splits.test)
        cost = accounting.model_cost(self.inference_model)
        seconds = float(self.train_seconds.numpy())
        return {
            "config": dataclasses.asdict(self.config),
            "data_source": self.splits.source,
            "num_train": len(self.splits.train), "num_validation": len(self.splits.validation),
            "num_test": len(self.splits.test),
            "steps": self.step,
            "pruning": dataclasses.asdict(self.pruning_config),
            "validation_loss": val_loss, "validation_accuracy": val_accuracy,
            "test_loss": test_loss, "test_accuracy": test_accuracy,
            **cost.summary(),
            "train_seconds": seconds,
            "images_per_second": self.step * self.config.batch_size / seconds if seconds else math.nan,
            "num_replicas": self.strategy.num_replicas_in_sync,
            "machine": distribute.describe_machine(),
            "layers": [dataclasses.asdict(c) for c in cost.layers],
        }

    def export(self):
        """Writes the stripped (wrapper-free, still sparse) model as a serving SavedModel."""
        self.pruner.apply_masks()
        stripped = pruning.strip(self.inference_model)
        self.run.save_directory_atomic(self.run.saved_model,
                                       lambda folder: save_serving_model(stripped, self.splits.info, folder))


def train(model_fn, splits, config, run_dir, strategy=None):
    """Trains (or resumes) a run and returns its results, also written to results.json (last,
    after the export: a run with results is finished, and a rerun returns them)."""
    run = RunDir(run_dir)
    run.claim(config)
    if (finished := run.finished_results()) is not None:
        return finished
    trainer = Trainer(model_fn, splits, config, run_dir, strategy)
    started = time.perf_counter()
    trainer.fit()
    results = trainer.results()
    if not all(math.isfinite(results[k]) for k in ("validation_loss", "test_loss")):
        raise Diverged(f"{run.path}: the trained network's evaluation loss is not finite; no results written")
    trainer.export()
    results["wall_seconds_this_invocation"] = time.perf_counter() - started
    write_json_atomic(run.results, results)
    return results
