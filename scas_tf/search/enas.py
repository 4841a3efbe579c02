"""SCAS on ENAS (paper Algorithm 1): search with pruned shared weights, then train the winners.

    loop over epochs:
        sample one architecture per child minibatch from the fixed policy; train the shared
        weights on it; prune them to the scheduled sparsity (one global step for all of them)
        update the controller with REINFORCE on validation accuracies of the *pruned* shared
        weights (one validation minibatch per sampled architecture)
    sample N architectures from the trained controller and score them on the validation set;
    train the best K from scratch under the same sparsity target (the shared trainer) and keep
    the one with the best validation accuracy (Algorithm 1, lines 12-13).

Rewards use BatchNorm as the reference does for each space: macro with the moving statistics
and no dropout (its `build_valid_rl` runs the child with is_training=False), micro in training
mode (its search child always normalises by batch statistics, and applies dropout).
Child training follows the reference's scripts: Nesterov SGD with warm restarts (SGDR), L2 of
`l2_reg * sum(w^2)` over every child variable.
"""
import collections
import dataclasses
import logging

import numpy as np
import tensorflow as tf
import tf_keras as keras

from scas_tf import architectures, data, figures, pruning, trainer
from scas_tf.config import SearchConfig, option, require_positive
from scas_tf.errors import ScasError
from scas_tf.models import layers
from scas_tf.models.enas_macro import MacroSupernet
from scas_tf.models.enas_micro import MicroSupernet
from scas_tf.resumable import Resumable
from scas_tf.run_dir import RunDir, read_json, write_json_atomic, write_text_atomic
from scas_tf.search.controller import MacroController, MicroController
from scas_tf.search.loop import claim_run, final_splits, results_of, search_splits
from scas_tf.search.reinforce import Reinforce
from scas_tf.spaces import enas_macro, enas_micro

log = logging.getLogger("scas")
SUM = tf.distribute.ReduceOp.SUM
POLICY_SAMPLES = 1000  # architectures sampled in one call to summarise the policy (Controller.sample_with_policy)


@dataclasses.dataclass(frozen=True)
class Space:
    """What the searcher needs of a search space."""
    arch_class: type  # the encoding: from_actions, to_text, op_names
    ops: tuple  # the op names
    policy_tables: object  # a policy's decision probabilities -> labelled heat-map tables
    controller: object  # EnasConfig -> its policy
    supernet: type  # the shared-weight child: (info, num_layers, filters, dropout)
    reward_training_mode: bool  # the reference's BN (and dropout) mode of the reward's forward pass


METHODS = {
    "enas_macro": Space(
        enas_macro.MacroArch, enas_macro.OPS, enas_macro.policy_tables,
        lambda c: MacroController(c.num_layers, len(enas_macro.OPS), c.lstm_size, c.tanh_constant,
                                  c.temperature or None, c.skip_target, c.seed),
        MacroSupernet, reward_training_mode=False),
    "enas_micro": Space(
        enas_micro.MicroArch, enas_micro.OPS, enas_micro.policy_tables,
        lambda c: MicroController(c.lstm_size, c.tanh_constant, c.op_tanh_reduce, c.temperature or None, c.seed),
        MicroSupernet, reward_training_mode=True),
}


@dataclasses.dataclass(frozen=True)
class EnasConfig(SearchConfig):
    """An ENAS search and the final training of its result. The fields below default to the
    reference's macro search script (scripts/cifar10_macro_search.sh); the `paper` presets
    set the shared ones too (configs.py)."""
    METHODS = tuple(METHODS)
    num_layers: int = option(12, "Child layers (macro) or normal-cell layers (micro) during search.")
    filters: int = option(36, "Child filters during search.")
    lr_restart_epochs: float = option(10.0, "SGDR: epochs of the first period (search and final "
                                      "training), each next one lr_restart_mult times longer; 0 = one "
                                      "cosine over the whole run.")
    lr_restart_mult: float = option(2.0, "SGDR: growth of each restart period.")
    l2_reg: float = option(2.5e-4, "Child L2 as the reference's: l2_reg * sum(w^2) over every child "
                           "variable (kernels, BN, biases).")
    grad_clip_norm: float = option(5.0, "Child gradient clipping (global norm); 0 disables it.")
    dropout: float = option(0.1, "Dropout before the child's classifier (the reference's 1 - keep_prob).")
    lstm_size: int = option(64, "Controller LSTM units.")
    controller_learning_rate: float = option(1e-3, "Controller Adam learning rate.")
    tanh_constant: float = option(1.5, "Controller logits are squashed to tanh_constant * tanh(.).")
    op_tanh_reduce: float = option(2.5, "Micro op logits use tanh_constant / op_tanh_reduce (the macro "
                                   "controller ignores it, as the reference's).")
    temperature: float = option(0.0, "Controller logit temperature; 0 disables it.")
    entropy_weight: float = option(1e-4, "Weight of the policy entropy added to the reward.")
    baseline_decay: float = option(0.99, "Decay of the moving-average reward baseline.")
    skip_target: float = option(0.4, "Target skip-connection rate (macro).")
    skip_weight: float = option(0.8, "Weight of the KL penalty towards skip_target (macro; 0 = off).")
    controller_steps: int = option(50, "Controller updates per search epoch.")
    controller_batch: int = option(20, "Architectures sampled per controller update.")
    num_candidates: int = option(100, "Architectures sampled after the search to pick the best from.")
    candidate_batches: int = option(10, "Validation minibatches each candidate is scored on.")
    final_candidates: int = option(1, "Best-scored distinct architectures trained from scratch; the one "
                                   "with the best validation accuracy is the result.")
    reward_batch_statistics: bool = option(False, "Score enas_macro rewards and candidates in training mode "
                                           "(BN batch statistics, dropout), as enas_micro always does; the "
                                           "reference uses BN's moving statistics (see the README).")
    final_filters: int = option(36, "Filters of the final network.")
    final_num_layers: int = option(0, "Cells of the final micro network (0 = num_layers).")
    final_l2_reg: float = option(2e-4, "L2 of the final training (as l2_reg).")
    final_dropout: float = option(0.5, "Dropout before the final network's classifier.")

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, (
            "num_layers", "filters", "controller_steps", "controller_batch", "num_candidates",
            "candidate_batches", "final_candidates", "final_filters", "lstm_size"))
        if self.method == "enas_macro" and self.num_layers < 3:
            raise ScasError("enas_macro needs num_layers >= 3 (pool layers at L//3-1 and 2*(L//3)-1)")
        if self.final_candidates > self.num_candidates:
            raise ScasError(f"final_candidates ({self.final_candidates}) cannot exceed num_candidates "
                            f"({self.num_candidates})")
        if min(self.l2_reg, self.final_l2_reg, self.grad_clip_norm) < 0 or not 0 <= self.dropout < 1:
            raise ScasError("l2_reg, final_l2_reg and grad_clip_norm must not be negative, dropout in [0, 1)")

    def final_training(self):
        return dict(
            lr_restart_epochs=self.lr_restart_epochs, lr_restart_mult=self.lr_restart_mult,
            weight_decay=2 * self.final_l2_reg, decay_all_variables=True, grad_clip_norm=self.grad_clip_norm,
            filters=self.final_filters,
            num_layers=(self.final_num_layers or self.num_layers) if self.method == "enas_micro" else 0,
            dropout=self.final_dropout)


class EnasSearch:
    """The shared child, its optimiser and pruner (under a strategy) and the controller."""

    def __init__(self, config, splits, run_dir, strategy=None):
        self.config, self.splits, self.run = config, splits, RunDir(run_dir)
        self.space = METHODS[config.method]
        self.reward_training_mode = self.space.reward_training_mode or config.reward_batch_statistics
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
            self.optimizer = trainer.make_sgd(
                config.learning_rate, config.min_learning_rate, self.total_steps,
                grad_clip_norm=config.grad_clip_norm,
                restart_steps=round(config.lr_restart_epochs * self.steps_per_epoch),
                restart_mult=config.lr_restart_mult)
            self.optimizer.build(self.supernet.trainable_variables)  # else the first trace makes slots
            self.pruner = pruning.Pruner(self.supernet, self.pruning_config)
            self.child_loss = keras.metrics.Mean()
            self.child_accuracy = keras.metrics.SparseCategoricalAccuracy()
            self.search_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
            random = layers.random_generators(self.supernet)
        # The controller is tiny and sequential: it lives on the host, outside the strategy.
        self.controller = self.space.controller(config)
        self.reinforce = Reinforce(self.controller, config.controller_learning_rate,
                                   config.baseline_decay, config.entropy_weight, config.skip_weight)
        self.sample = tf.function(self.controller.sample)
        self.sample_with_policy = tf.function(self.controller.sample_with_policy)
        # The epoch's architectures, sampled at its start: checkpointed, so that a search resumed
        # inside the epoch trains the ones it would have.
        actions = self.sample.get_concrete_function(self.steps_per_epoch).structured_outputs[0]
        self.epoch_archs = tf.Variable(tf.zeros(actions.shape, actions.dtype), trainable=False)
        self.loop = Resumable(
            self.run, config, self.total_steps, self.steps_per_epoch, "search_seconds", supernet=self.supernet,
            optimizer=self.optimizer, controller=self.controller, controller_optimizer=self.reinforce.optimizer,
            baseline=self.reinforce.baseline, epoch_archs=self.epoch_archs, search_seconds=self.search_seconds,
            random=random)

    def arch_from_actions(self, actions):
        return self.space.arch_class.from_actions(actions)

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def replica_child_step(self, images, labels, arch):
        per_example, logits = trainer.pruned_sgd_step(
            self.supernet, lambda: self.supernet(images, arch, training=True), labels,
            self.optimizer, self.pruner, 2 * self.config.l2_reg, self.config.batch_size,
            decay_all_variables=True)
        self.child_loss.update_state(per_example)
        self.child_accuracy.update_state(labels, logits)

    @tf.function
    def child_steps(self, iterator, archs, start, count):
        """One child step per architecture in archs[start:start + count] (a fresh sample per
        minibatch), each followed by the pruning step of the shared weights. (Slicing inside
        keeps one trace for the short last chunk of an epoch.)"""
        for k in tf.range(start, start + count):
            images, labels = next(iterator)
            self.strategy.run(self.replica_child_step, args=(images, labels, archs[k]))
            self.pruner.update_masks(self.optimizer.iterations)

    @tf.function
    def accuracies(self, iterator, archs):
        """Accuracy of each architecture on its own next validation minibatch."""
        def replica_correct(images, labels, arch):
            logits = self.supernet(images, arch, training=self.reward_training_mode)
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
        start = self.step - epoch * self.steps_per_epoch
        if start == 0:
            self.epoch_archs.assign(self.sample(self.steps_per_epoch)[0])
        dataset = data.train_dataset(self.splits.train, self.splits.info, self.config.batch_size,
                                     self.config.seed, epoch, start)
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        archs = tf.convert_to_tensor(self.epoch_archs)
        while self.step < (epoch + 1) * self.steps_per_epoch:
            self.child_loss.reset_state()
            self.child_accuracy.reset_state()
            self.child_steps(iterator, archs, tf.constant(self.step - epoch * self.steps_per_epoch),
                             tf.constant(self.loop.next_chunk(self.step)))
            step = self.step
            tf.summary.scalar("child/loss", self.child_loss.result(), step)
            tf.summary.scalar("child/accuracy", self.child_accuracy.result(), step)
            tf.summary.scalar("child/learning_rate", self.optimizer.learning_rate, step)
            tf.summary.scalar("sparsity/scheduled", self.pruner.sparsity_at(step), step)
            tf.summary.scalar("sparsity/achieved", self.pruner.sparsity(), step)
            log.debug("search step %d/%d child loss %.4f accuracy %.4f", step, self.total_steps,
                      self.child_loss.result(), self.child_accuracy.result())
            self.loop.after_chunk(step, self.child_loss.result(), self.supernet.trainable_variables)

    def train_controller_epoch(self, epoch):
        """The controller's steps; returns the last one's metrics and its sampled architectures."""
        stream = self.validation_stream(epoch)
        for _ in range(self.config.controller_steps):
            actions, *_ = self.sample(self.config.controller_batch)
            metrics = self.reinforce.update(actions, self.accuracies(stream, actions))
        return metrics, [self.arch_from_actions(a) for a in actions.numpy()]

    def log_epoch_end(self, metrics, archs):
        step = self.step
        for name, value in metrics.items():
            tf.summary.scalar(f"controller/{name}", value, step)
        policy, tables = self.policy_summary()
        write_policy_heatmaps(tables, f"after epoch {step // self.steps_per_epoch}", step)
        for group, frequencies in policy["op_frequencies"].items():
            for op, frequency in frequencies.items():
                tf.summary.scalar(f"controller/op_frequency/{group}/{op}", frequency, step)
        tf.summary.scalar("controller/policy_entropy", policy["entropy"], step)
        if "skip_rate" in policy:
            tf.summary.scalar("controller/skip_rate", policy["skip_rate"], step)
        tf.summary.text("controller/sampled", "\n\n".join(a.to_text() for a in archs[:5]), step)
        log.debug("sampled %s", archs[0].to_text())
        self.loop.end_epoch(step, self.child_loss.result(),
                            self.supernet.trainable_variables + self.controller.trainable_variables,
                            f"child loss {self.child_loss.result():.4f} accuracy {self.child_accuracy.result():.4f} "
                            f"sparsity {self.pruner.sparsity():.3f}, controller reward {metrics['reward']:.4f} baseline "
                            f"{metrics['baseline']:.4f} entropy {policy['entropy']:.3f}")

    def policy_summary(self, num_samples=POLICY_SAMPLES):
        """(summary, tables) of the controller's policy, from architectures sampled in one call:
        the summary as sampled (mean entropy per architecture, each op's share of the op choices
        (per cell type in micro), the skip rate (macro)); the tables, each decision's marginal
        probabilities (Controller.sample_with_policy) as labelled heat-map tables."""
        actions, _, entropy, _, probabilities = self.sample_with_policy(num_samples)
        archs = [self.arch_from_actions(a) for a in actions.numpy()]
        chosen = collections.defaultdict(collections.Counter)
        for arch in archs:
            for group, names in arch.op_names().items():
                chosen[group].update(names)
        summary = {"samples": num_samples, "entropy": float(np.mean(entropy.numpy())), "op_frequencies": {
            group: {op: counts[op] / sum(counts.values()) for op in self.space.ops}
            for group, counts in chosen.items()}}
        if self.config.method == "enas_macro":
            summary["skip_rate"] = float(np.mean([a.skip_rate() for a in archs]))
        return summary, self.space.policy_tables([p.numpy() for p in probabilities])

    def search(self):
        """Runs (or resumes) the search epochs, recording the policy before the first."""
        policy_file = self.run.path / "controller_policy.json"
        if not policy_file.exists() and not self.loop.manager.latest_checkpoint:
            write_json_atomic(policy_file, {"start": self.policy_summary()[0]})
        self.loop.run_epochs(lambda: self.step, self.search_epoch, dashboard(self.config.method))
        policy = read_json(policy_file) if policy_file.exists() else {}
        if "end" not in policy:
            policy["end"] = self.policy_summary()[0]
            write_json_atomic(policy_file, policy)
        return policy

    def search_epoch(self, epoch):
        self.train_child_epoch(epoch)
        self.log_epoch_end(*self.train_controller_epoch(epoch))

    def score_candidates(self):
        """Samples candidates and scores each distinct one on the same validation minibatches;
        best first."""
        dataset = data.eval_dataset(self.splits.validation, self.splits.info, self.config.batch_size)
        batches = dataset.take(self.config.candidate_batches).cache()
        actions, *_ = self.sample(self.config.num_candidates)
        scores = np.zeros(self.config.num_candidates)
        for batch_index in range(self.config.candidate_batches):
            iterator = iter(self.strategy.experimental_distribute_dataset(
                batches.skip(batch_index).take(1).repeat()))
            scores += self.accuracies(iterator, actions).numpy() / self.config.candidate_batches
        texts = [self.arch_from_actions(a).to_text() for a in actions.numpy()]
        candidates = {text: {"architecture": text, "validation_accuracy": float(score)}
                      for text, score in zip(texts, scores)}
        return sorted(candidates.values(), key=lambda c: -c["validation_accuracy"])


def write_policy_heatmaps(tables, when, step):
    """A TensorBoard image per table of the policy's decision probabilities (policy_tables)."""
    for name, (caption, rows, columns, probabilities) in tables.items():
        title = (f"controller policy {when}: {caption}\n(each decision's probabilities, mean over "
                 f"{POLICY_SAMPLES} sampled architectures)")
        figures.write_heatmap_summary(f"controller/policy/{name}", figures.Heatmap(title, rows, columns, probabilities),
                                      step)


def dashboard(method):
    """The search's custom scalars layout: the child, then the controller's learning."""
    skips = [(f"controller: skip rate ({POLICY_SAMPLES} samples)", ["controller/skip_rate"]),
             ("controller: skip penalty", ["controller/skip_kl"])] if method == "enas_macro" else []
    return f"{method} search", [
        ("child: loss", ["child/loss"]),
        ("child: accuracy", ["child/accuracy"]),
        ("sparsity: achieved vs scheduled", ["sparsity/achieved", "sparsity/scheduled"]),
        ("controller: reward and baseline", ["controller/reward", "controller/baseline"]),
        (f"controller: entropy (last batch; {POLICY_SAMPLES} samples)",
         ["controller/entropy", "controller/policy_entropy"]),
        (f"controller: share of each op ({POLICY_SAMPLES} samples)", ["controller/op_frequency/"]),
        *skips,
        ("controller: REINFORCE loss", ["controller/loss"]),
        ("child: learning rate", ["child/learning_rate"]),
    ]


FINAL_SUMMARY = ("validation_accuracy", "test_accuracy", "params", "nonzero_params", "weight_sparsity",
                 "dense_macs", "sparse_macs", "train_seconds")


def train_finalists(config, candidates, splits, run, strategy):
    """Trains the best config.final_candidates candidates from scratch (each in
    finalists/<rank>/), marks their results in `candidates` and returns (best's rank, its results)."""
    finals = []
    for rank, candidate in enumerate(candidates[:config.final_candidates]):
        final_config = config.final_train_config(f"{config.method}:{candidate['architecture']}")
        folder = run.path / "finalists" / str(rank)
        log.info("training candidate %d of %d from scratch in %s", rank + 1, config.final_candidates, folder)
        results = trainer.train(architectures.model_builder(final_config, splits.info), splits,
                                final_config, folder, strategy)
        candidate["final"] = {"dir": f"finalists/{rank}", **{k: results[k] for k in FINAL_SUMMARY}}
        finals.append(results)
    best = max(range(len(finals)), key=lambda rank: finals[rank]["validation_accuracy"])
    for rank, candidate in enumerate(candidates[:config.final_candidates]):
        candidate["chosen"] = rank == best
    return best, finals[best]


def run_search(config, load_splits, run_dir, strategy=None):
    """Search, score candidates, train the best from scratch, write the winner; returns the
    results. `load_splits(validation_fraction)` gives the dataset's splits."""
    run = claim_run(config, run_dir)
    if (finished := run.finished_results()) is not None:
        return finished
    searched, splits = search_splits(config, load_splits)
    search = EnasSearch(config, searched, run_dir, strategy)
    policy = search.search()
    # Written before the finalists train, so that a rerun trains (or resumes) the same ones.
    candidates_file = run.path / "candidates.json"
    candidates = read_json(candidates_file) if candidates_file.exists() else search.score_candidates()
    write_json_atomic(candidates_file, candidates)
    best, final = train_finalists(config, candidates, final_splits(config, splits, load_splits), run, strategy)
    arch_spec = f"{config.method}:{candidates[best]['architecture']}"
    write_text_atomic(run.path / "architecture.txt", arch_spec + "\n")
    write_json_atomic(candidates_file, candidates)
    log.info("chose candidate %d of %d (validation accuracy %.4f from scratch): %s", best + 1,
             config.final_candidates, final["validation_accuracy"], arch_spec)
    results = results_of(search, config, arch_spec, final, candidates[best]["final"]["dir"],
                         shared_weight_sparsity=search.pruner.sparsity(),
                         controller_policy=policy,
                         chosen_candidate_shared_validation_accuracy=candidates[best]["validation_accuracy"])
    write_json_atomic(run.results, results)
    return results
