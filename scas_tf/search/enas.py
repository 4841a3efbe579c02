"""SCAS on ENAS (paper Algorithm 1): search with pruned shared weights, then train the winner.

    loop over epochs:
        sample one architecture per child minibatch from the fixed policy; train the shared
        weights on it; prune them to the scheduled sparsity (one global step for all of them)
        update the controller with REINFORCE on validation accuracies of the *pruned* shared
        weights (one validation minibatch per sampled architecture)
    sample N architectures, keep the best on the validation set, write it out, and train it
    from scratch under the same sparsity target (the shared trainer).

Rewards use BatchNorm in training mode, as the reference does: shared moving statistics do not
belong to any one architecture.
"""
import dataclasses
import logging

import numpy as np
import tensorflow as tf
import tf_keras as keras

from scas_tf import architectures, data, pruning, trainer
from scas_tf.errors import ScasError
from scas_tf.models.enas_macro import MacroSupernet
from scas_tf.models.enas_micro import MicroSupernet
from scas_tf.run_dir import RunDir, write_json_atomic, write_text_atomic
from scas_tf.search.controller import Controller
from scas_tf.search.loop import checkpointing, search_epochs
from scas_tf.search.reinforce import Reinforce
from scas_tf.spaces import enas_macro, enas_micro
from scas_tf.trainer import option

log = logging.getLogger("scas")
SUM = tf.distribute.ReduceOp.SUM

@dataclasses.dataclass(frozen=True)
class Space:
    """What the searcher needs of a search space."""
    arch_class: type  # the encoding: from_actions, to_text
    decisions: object  # num_layers -> the controller's Decision sequence
    supernet: type  # the shared-weight child: (info, num_layers, filters, dropout)


METHODS = {
    "enas_macro": Space(enas_macro.MacroArch, enas_macro.controller_decisions, MacroSupernet),
    "enas_micro": Space(enas_micro.MicroArch, lambda num_layers: enas_micro.controller_decisions(),
                        MicroSupernet),
}


@dataclasses.dataclass(frozen=True)
class EnasConfig:
    """Everything that defines an ENAS search and the final training of its result."""
    method: str = option("enas_macro", "Search method: enas_macro or enas_micro.")
    dataset: str = option("mnist_mini", "Dataset: mnist_mini (embedded), mnist, cifar10, cifar100.")
    num_layers: int = option(12, "Child layers (macro) or normal-cell layers (micro) during search.")
    filters: int = option(36, "Child filters during search.")
    epochs: int = option(310, "Search epochs (one pass over the training split each).")
    batch_size: int = option(128, "Child minibatch size.")
    learning_rate: float = option(0.05, "Child peak learning rate (cosine schedule).")
    min_learning_rate: float = option(5e-4, "Child final learning rate.")
    weight_decay: float = option(2.5e-4, "Child L2 decay on kernels.")
    grad_clip_norm: float = option(5.0, "Child gradient clipping (global norm); 0 disables it.")
    dropout: float = option(0.1, "Dropout before the child's classifier.")
    lstm_size: int = option(64, "Controller LSTM units.")
    controller_learning_rate: float = option(1e-3, "Controller Adam learning rate.")
    tanh_constant: float = option(1.5, "Controller logits are squashed to tanh_constant * tanh(.).")
    op_tanh_reduce: float = option(1.0, "Op logits use tanh_constant / op_tanh_reduce.")
    temperature: float = option(0.0, "Controller logit temperature; 0 disables it.")
    entropy_weight: float = option(1e-4, "Weight of the policy entropy added to the reward.")
    baseline_decay: float = option(0.99, "Decay of the moving-average reward baseline.")
    skip_target: float = option(0.4, "Target skip-connection rate (macro).")
    skip_weight: float = option(0.8, "Weight of the KL penalty towards skip_target (macro; 0 = off).")
    controller_steps: int = option(50, "Controller updates per search epoch.")
    controller_batch: int = option(20, "Architectures sampled per controller update.")
    target_sparsity: float = option(0.0, "Fraction of every prunable kernel pruned, in [0, 1).")
    pruning_begin: float = option(0.1, "Fraction of the search (and of final training) at which pruning starts.")
    pruning_end: float = option(0.6, "Fraction by which target_sparsity is reached.")
    pruning_frequency: int = option(0, "Steps between mask updates; 0 means about 50 updates in all.")
    num_candidates: int = option(100, "Architectures sampled after the search to pick the best from.")
    candidate_batches: int = option(10, "Validation minibatches each candidate is scored on.")
    validation_fraction: float = option(0.1, "Fraction of the training set held out for validation.")
    seed: int = option(0, "Seed of everything.")
    log_every_steps: int = option(50, "Steps between child log lines and TensorBoard points.")
    final_epochs: int = option(310, "Epochs of the final from-scratch training.")
    final_filters: int = option(36, "Filters of the final network.")
    final_num_layers: int = option(0, "Cells of the final micro network (0 = num_layers).")
    final_batch_size: int = option(128, "Batch size of the final training.")
    final_learning_rate: float = option(0.05, "Peak learning rate of the final training.")

    def __post_init__(self):
        if self.method not in METHODS:
            raise ScasError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        trainer.require_positive(self, (
            "num_layers", "filters", "epochs", "batch_size", "controller_steps", "controller_batch",
            "num_candidates", "candidate_batches", "final_epochs", "final_filters", "final_batch_size",
            "lstm_size", "log_every_steps"))
        if self.method == "enas_macro" and self.num_layers < 3:
            raise ScasError("enas_macro needs num_layers >= 3 (pool layers at L//3-1 and 2L//3-1)")
        self.final_train_config()  # validates the shared fields (sparsity, dataset, ...)

    def final_train_config(self, arch_spec="small_cnn"):
        return trainer.TrainConfig(
            arch=arch_spec, dataset=self.dataset, epochs=self.final_epochs,
            batch_size=self.final_batch_size, learning_rate=self.final_learning_rate,
            min_learning_rate=0.0, weight_decay=self.weight_decay,
            grad_clip_norm=self.grad_clip_norm, validation_fraction=self.validation_fraction,
            target_sparsity=self.target_sparsity, pruning_begin=self.pruning_begin,
            pruning_end=self.pruning_end, pruning_frequency=self.pruning_frequency,
            seed=self.seed, log_every_steps=self.log_every_steps, filters=self.final_filters,
            num_layers=(self.final_num_layers or self.num_layers) if self.method == "enas_micro" else 0)


class EnasSearch:
    """The shared child, its optimiser and pruner (under a strategy) and the controller."""

    def __init__(self, config, splits, run_dir, strategy=None):
        self.config, self.splits, self.run = config, splits, RunDir(run_dir)
        self.space = METHODS[config.method]
        self.strategy = strategy or tf.distribute.get_strategy()
        self.steps_per_epoch = data.steps_per_epoch(splits.train, config.batch_size)
        self.total_steps = config.epochs * self.steps_per_epoch
        self.pruning_config = pruning.gradual_config(
            config.target_sparsity, self.total_steps, config.pruning_begin, config.pruning_end,
            config.pruning_frequency)
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.supernet = self.space.supernet(splits.info, num_layers=config.num_layers,
                                           filters=config.filters, dropout=config.dropout)
            self.optimizer = trainer.make_sgd(config.learning_rate, config.min_learning_rate,
                                              self.total_steps, grad_clip_norm=config.grad_clip_norm)
            self.optimizer.build(self.supernet.trainable_variables)  # else the first trace makes slots
            self.pruner = pruning.Pruner(self.supernet, self.pruning_config)
            self.child_loss = keras.metrics.Mean()
            self.child_accuracy = keras.metrics.SparseCategoricalAccuracy()
            self.search_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        # The controller is tiny and sequential: it lives on the host, outside the strategy.
        self.controller = Controller(
            self.space.decisions(config.num_layers), config.lstm_size,
            config.tanh_constant, config.op_tanh_reduce, config.temperature or None,
            config.skip_target, config.seed)
        self.reinforce = Reinforce(self.controller, config.controller_learning_rate,
                                   config.baseline_decay, config.entropy_weight, config.skip_weight)
        self.sample = tf.function(self.controller.sample)
        self.checkpoint, self.manager = checkpointing(
            self.run, supernet=self.supernet, optimizer=self.optimizer, controller=self.controller,
            controller_optimizer=self.reinforce.optimizer, baseline=self.reinforce.baseline,
            search_seconds=self.search_seconds)

    def arch_from_actions(self, actions):
        return self.space.arch_class.from_actions(actions)

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def replica_child_step(self, images, labels, arch):
        per_example, logits = trainer.pruned_sgd_step(
            self.supernet, lambda: self.supernet(images, arch, training=True), labels,
            self.optimizer, self.pruner, self.config.weight_decay, self.config.batch_size)
        self.child_loss.update_state(per_example)
        self.child_accuracy.update_state(labels, logits)

    @tf.function(reduce_retracing=True)
    def child_steps(self, iterator, archs):
        """One child step per architecture in `archs` (a fresh sample per minibatch), each
        followed by the pruning step of the shared weights."""
        for k in tf.range(tf.shape(archs)[0]):
            images, labels = next(iterator)
            self.strategy.run(self.replica_child_step, args=(images, labels, archs[k]))
            self.pruner.update_masks(self.optimizer.iterations)

    @tf.function
    def accuracies(self, iterator, archs):
        """Accuracy of each architecture on its own next validation minibatch."""
        def replica_correct(images, labels, arch):
            logits = self.supernet(images, arch, training=True)
            hits = tf.equal(tf.argmax(logits, -1, output_type=labels.dtype), labels)
            return tf.reduce_sum(tf.cast(hits, tf.float32)), tf.cast(tf.size(labels), tf.float32)

        results = tf.TensorArray(tf.float32, size=tf.shape(archs)[0])
        for k in tf.range(tf.shape(archs)[0]):
            images, labels = next(iterator)
            correct, count = self.strategy.run(replica_correct, args=(images, labels, archs[k]))
            total = self.strategy.reduce(SUM, correct, None) / self.strategy.reduce(SUM, count, None)
            results = results.write(k, total)
        return results.stack()

    def validation_stream(self, epoch):
        dataset = data.train_dataset(self.splits.validation, self.splits.info, self.config.batch_size,
                                     self.config.seed + 1, epoch, augment=False).repeat()
        return iter(self.strategy.experimental_distribute_dataset(dataset))

    def train_child_epoch(self, epoch):
        dataset = data.train_dataset(self.splits.train, self.splits.info, self.config.batch_size,
                                     self.config.seed, epoch)
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        archs, *_ = self.sample(self.steps_per_epoch)
        for start in range(0, self.steps_per_epoch, self.config.log_every_steps):
            self.child_loss.reset_state()
            self.child_accuracy.reset_state()
            self.child_steps(iterator, archs[start:start + self.config.log_every_steps])
            step = self.step
            tf.summary.scalar("child/loss", self.child_loss.result(), step)
            tf.summary.scalar("child/accuracy", self.child_accuracy.result(), step)
            tf.summary.scalar("child/learning_rate", self.optimizer.learning_rate, step)
            tf.summary.scalar("sparsity/scheduled", self.pruner.sparsity_at(step), step)
            tf.summary.scalar("sparsity/achieved", pruning.overall_sparsity(self.pruner.report()), step)
            log.info("search step %d/%d child loss %.4f accuracy %.4f", step, self.total_steps,
                     self.child_loss.result(), self.child_accuracy.result())

    def train_controller_epoch(self, epoch):
        stream = self.validation_stream(epoch)
        for _ in range(self.config.controller_steps):
            actions, *_ = self.sample(self.config.controller_batch)
            metrics = self.reinforce.update(actions, self.accuracies(stream, actions))
        archs = [self.arch_from_actions(a) for a in actions.numpy()]
        step = self.step
        for name, value in metrics.items():
            tf.summary.scalar(f"controller/{name}", value, step)
        if self.config.method == "enas_macro":
            tf.summary.scalar("controller/skip_rate", np.mean([a.skip_rate() for a in archs]), step)
        tf.summary.text("controller/sampled", "\n\n".join(a.to_text() for a in archs[:5]), step)
        log.info("epoch %d: controller reward %.4f baseline %.4f entropy %.3f; sampled %s", epoch + 1,
                 metrics["reward"], metrics["baseline"], metrics["entropy"], archs[0].to_text())

    def search(self):
        """Runs (or resumes) the search epochs."""
        search_epochs(self, self.search_epoch)

    def search_epoch(self, epoch):
        self.train_child_epoch(epoch)
        self.train_controller_epoch(epoch)

    def pick_best(self):
        """Samples candidates and ranks them on the same validation minibatches."""
        dataset = data.eval_dataset(self.splits.validation, self.splits.info, self.config.batch_size)
        batches = dataset.take(self.config.candidate_batches).cache()
        actions, *_ = self.sample(self.config.num_candidates)
        scores = np.zeros(self.config.num_candidates)
        for batch_index in range(self.config.candidate_batches):
            iterator = iter(self.strategy.experimental_distribute_dataset(
                batches.skip(batch_index).take(1).repeat()))
            scores += self.accuracies(iterator, actions).numpy() / self.config.candidate_batches
        candidates = sorted(({"architecture": self.arch_from_actions(a).to_text(), "validation_accuracy": float(s)}
                             for a, s in zip(actions.numpy(), scores)), key=lambda c: -c["validation_accuracy"])
        return candidates


def run_search(config, load_splits, run_dir, strategy=None):
    """Search, pick, write the architecture, train it from scratch; returns the results.
    `load_splits(validation_fraction)` gives the dataset's splits."""
    run = RunDir(run_dir)
    run.claim(dataclasses.asdict(config))
    splits = load_splits(config.validation_fraction)
    search = EnasSearch(config, splits, run_dir, strategy)
    search.search()
    candidates = search.pick_best()
    best = candidates[0]
    arch_spec = f"{config.method}:{best['architecture']}"
    write_text_atomic(run.path / "architecture.txt", arch_spec + "\n")
    write_json_atomic(run.path / "candidates.json", candidates)
    log.info("best of %d candidates (validation accuracy %.4f): %s", len(candidates),
             best["validation_accuracy"], arch_spec)
    final_config = config.final_train_config(arch_spec)
    final = trainer.train(
        lambda: architectures.build_model(arch_spec, splits.info, final_config.filters, final_config.num_layers),
        splits, final_config, run.path / "final", strategy)
    results = {
        "method": config.method, "architecture": arch_spec,
        "search_seconds": float(search.search_seconds.numpy()), "search_steps": search.step,
        "search_pruning": dataclasses.asdict(search.pruning_config),
        "shared_weight_sparsity": pruning.overall_sparsity(search.pruner.report()),
        "best_candidate_validation_accuracy": best["validation_accuracy"],
        "final": {k: v for k, v in final.items() if k != "layers"},
    }
    write_json_atomic(run.results, results)
    return results
