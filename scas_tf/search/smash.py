"""SCAS on SMASH (paper Algorithm 3): a HyperNet whose generated weights are pruned.

    every minibatch: sample a random architecture c, generate its 1x1 weights H(c), prune them
        to the scheduled sparsity (prune_tensor on the global step), train on the loss of the
        pruned network (the HyperNet learns through the kept entries only); the learned
        weights (stem, spatial kernels, transitions, classifier) are pruned by the Pruner on
        the same schedule
    score architectures by the validation error of their generated weights pruned to the
        target: random ones, perturbations of the best, then greedy (Markov) steps
    train the best from scratch under the same target (the shared trainer)

Training follows the reference (train.py, SMASH.py): Adam (beta_1 0.5, epsilon 1e-4), cosine
to 0 per step, L2 on every weight but the HyperNet's, BN in training mode, a fresh noise
channel per architecture; the budget (0.5 -> 1) and the largest kernel (3 -> max_kernel) are
annealed over the first half. Scoring uses BN's moving statistics, as the reference's eval().
Each step's architecture and noise are functions of (seed, step), and scores are kept as they
come, so a rerun resumes mid-search and mid-scoring with the same draws.
"""
import dataclasses
import logging

import numpy as np
import tensorflow as tf
import tf_keras as keras

from scas_tf import architectures, data, pruning, trainer
from scas_tf.config import SearchConfig, option, require_fraction, require_positive
from scas_tf.data.pipeline import Split
from scas_tf.errors import ScasError
from scas_tf.models.smash import SearchNetwork
from scas_tf.resumable import Resumable
from scas_tf.run_dir import RunDir, read_json, write_json_atomic, write_text_atomic
from scas_tf.search.loop import claim_run, final_splits, results_of, search_splits
from scas_tf.spaces import smash as space_lib

log = logging.getLogger("scas")
SUM = tf.distribute.ReduceOp.SUM
# Random streams, each a function of (seed, stream, ...): an architecture and noise per
# training step; the per-epoch validation's; scoring's architectures; noise per scored one.
TRAIN, VALIDATION, SCORING, SCORE_NOISE = range(4)
DASHBOARD = ("smash search", [
    ("loss", ["train/loss"]),
    ("accuracy: training steps, validation (a random architecture per batch)",
     ["train/accuracy", "validation/random_architecture_accuracy"]),
    ("sparsity: generated vs learned weights", ["sparsity/generated", "sparsity/learned"]),
    ("scoring: each architecture's validation error and the best so far (x: architectures scored)",
     ["scoring/validation_error", "scoring/best_validation_error"]),
    ("learning rate", ["train/learning_rate"]),
])


@dataclasses.dataclass(frozen=True)
class SmashConfig(SearchConfig):
    """A SMASH search and the final training of its result. The fields below default to the
    reference's (utils.py train_parser, evaluate.py, train.py); the `paper` preset sets the
    shared ones too (configs.py)."""
    METHODS = ("smash",)
    depth: int = option(12, "SMASH: reference layers per block, sizing the channel budget (-D).")
    width: int = option(4, "SMASH: widening factor (-k): the stem gives 2 * N * width channels.")
    N: int = option(8, "SMASH: channels per bank unit; bank sizes and op outputs are multiples of it.")
    N_max: int = option(64, "SMASH: most output channels of an op (and widest bank).")
    bottleneck: int = option(4, "SMASH: an op's 1x1 widens to at most bottleneck x its output.")
    max_bottleneck: int = option(2, "SMASH: an op's 1x1 has at most max_bottleneck * N_max outputs.")
    depth_compression: int = option(2, "SMASH: bank units per column of the conditioning tensor.")
    max_kernel: int = option(7, "SMASH: largest kernel size per axis (odd), reached half-way through training.")
    max_dilate: int = option(3, "SMASH: largest dilation per axis.")
    max_groups: int = option(8, "SMASH: most groups of an op's spatial convolution (divisors of N).")
    adam_beta1: float = option(0.5, "SMASH: Adam's beta_1 (beta_2 is 0.999).")
    adam_epsilon: float = option(1e-4, "SMASH: Adam's epsilon.")
    weight_decay: float = option(1e-4, "L2 decay (coupled) on every weight but the HyperNet's.")
    num_random: int = option(500, "SMASH: random architectures scored after training.")
    num_perturbed: int = option(100, "SMASH: perturbations of the best random architecture scored.")
    num_markov: int = option(100, "SMASH: greedy steps (perturb the best, keep it if better).")
    perturb_probability: float = option(0.05, "SMASH: probability of re-drawing each decision when perturbing.")
    score_images: int = option(5000, "SMASH: validation images each architecture is scored on (0 = all).")
    score_batch_size: int = option(100, "SMASH: batch size of scoring.")
    final_momentum: float = option(0.9, "SMASH: Nesterov momentum of the final training.")
    final_weight_decay: float = option(1e-4, "SMASH: L2 decay of the final training.")

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, ("num_random", "score_batch_size"))
        if min(self.num_perturbed, self.num_markov, self.score_images, self.weight_decay,
               self.final_weight_decay) < 0:
            raise ScasError("num_perturbed, num_markov, score_images and weight decays must not be negative")
        require_fraction(self, ("perturb_probability",), closed=True)
        require_fraction(self, ("adam_beta1",))
        if self.final_auxiliary_weight or self.final_drop_path:
            raise ScasError("SMASH networks have no auxiliary head or drop-path")
        self.space()  # validates the scale

    def space(self):
        return space_lib.SmashSpace(**{f.name: getattr(self, f.name) for f in dataclasses.fields(space_lib.SmashSpace)})

    def final_training(self):
        return dict(momentum=self.final_momentum, nesterov=True, weight_decay=self.final_weight_decay)


def annealed(space, progress):
    """The reference's annealing over the first half of training: (max budget 0.5 -> 1, largest
    kernel size 3 -> space.max_kernel, a size allowed from progress (2m - 1) / (4M))."""
    fraction = min(progress / 0.5, 1.0)
    steps = (space.max_kernel - 3) // 2
    return 0.5 + 0.5 * fraction, 3 + 2 * ((int(2 * steps * fraction) + 1) // 2)


class SmashSearch:
    """The search network (HyperNet and learned weights), its optimiser and pruner, under a strategy."""

    def __init__(self, config, splits, run_dir, strategy=None):
        self.config, self.splits, self.run = config, splits, RunDir(run_dir)
        self.space = config.space()
        self.strategy = strategy or tf.distribute.get_strategy()
        self.steps_per_epoch = data.steps_per_epoch(splits.train, config.batch_size)
        self.total_steps = config.epochs * self.steps_per_epoch
        self.pruning_config = config.pruning_config(self.total_steps)
        self.schedule = self.pruning_config.schedule()
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.network = SearchNetwork(self.space, splits.info)
            self.optimizer = keras.optimizers.Adam(
                trainer.cosine_schedule(config.learning_rate, config.min_learning_rate, self.total_steps),
                beta_1=config.adam_beta1, beta_2=0.999, epsilon=config.adam_epsilon)
            self.optimizer.build(self.network.trainable_variables)
            self.pruner = pruning.Pruner(self.network, self.pruning_config)
            self.train_loss = keras.metrics.Mean()
            self.train_accuracy = keras.metrics.SparseCategoricalAccuracy()
            self.search_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.loop = Resumable(self.run, config, self.total_steps, self.steps_per_epoch, "search_seconds",
                              network=self.network, optimizer=self.optimizer, search_seconds=self.search_seconds)

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def rng(self, *key):
        return np.random.default_rng([self.config.seed, *key])

    def sample(self, step, *key):
        """A random architecture from the stream `key`, as annealed at `step`."""
        max_budget, max_kernel = annealed(self.space, step / self.total_steps)
        return space_lib.sample(self.space, self.rng(*key), max_budget, max_kernel)

    def inputs(self, arch, *key):
        """The HyperNet's input for `arch`: its conditioning tensor and a noise channel drawn
        from the stream `key`."""
        condition = space_lib.conditioning(arch)
        noise = self.rng(*key).standard_normal((*condition.shape[:2], 1)).astype(np.float32)
        return condition, noise

    def train_step(self, images, labels):
        """One optimiser step of the network on a fresh architecture, then the pruning step."""
        self.train_architecture(self.sample(self.step, TRAIN, self.step), images, labels)

    def train_architecture(self, arch, images, labels):
        """The replicas' gradients on `arch` (run eagerly: its shapes are its own), summed,
        then one traced optimiser and pruning step (the variables never change)."""
        step = self.step
        condition, noise = self.inputs(arch, TRAIN, step)
        network = self.network

        def replica_gradients(images, labels):
            with tf.GradientTape() as tape:
                kernels = network.op_kernels(arch, condition, noise, self.schedule, step)
                logits = network.forward(images, arch, kernels, training=True)
                per_example = trainer.cross_entropy(labels, logits)
                loss = trainer.regularized_loss(network, per_example, self.config.weight_decay,
                                                self.config.batch_size, decayed=network.learned_variables)
            self.train_loss.update_state(per_example)
            self.train_accuracy.update_state(labels, logits)
            return tape.gradient(loss, network.trainable_variables)

        gradients = self.strategy.run(replica_gradients, args=(images, labels))
        self.apply_step([g if g is None else self.strategy.reduce(SUM, g, axis=None) for g in gradients])

    @tf.function
    def apply_step(self, gradients):
        """The optimiser step (pruned weights' gradients blocked), then the pruning step."""
        trainer.apply_pruned_gradients(self.optimizer, self.pruner, gradients, self.network.trainable_variables)
        self.pruner.update_masks(self.optimizer.iterations)

    def search_epoch(self, epoch):
        start = self.step - epoch * self.steps_per_epoch
        dataset = data.train_dataset(self.splits.train, self.splits.info, self.config.batch_size,
                                     self.config.seed, epoch, start)
        batches = iter(self.strategy.experimental_distribute_dataset(dataset))
        while self.step < (epoch + 1) * self.steps_per_epoch:
            self.train_loss.reset_state()
            self.train_accuracy.reset_state()
            for _ in range(self.loop.next_chunk(self.step)):
                self.train_step(*next(batches))
            self.log_steps()
            self.loop.after_chunk(self.step, self.train_loss.result(), self.network.trainable_variables)
        accuracy = self.random_architecture_accuracy(epoch)
        tf.summary.scalar("validation/random_architecture_accuracy", accuracy, self.step)
        self.loop.end_epoch(self.step, self.train_loss.result(), self.network.trainable_variables,
                            f"{self.summary(self.pruner.sparsity())}, validation accuracy {accuracy:.4f} (a random "
                            "architecture per batch)")

    def summary(self, learned_sparsity):
        return (f"loss {self.train_loss.result():.4f} accuracy {self.train_accuracy.result():.4f} sparsity "
                f"generated {float(self.schedule(self.step - 1)[1]):.3f} learned {learned_sparsity:.3f}")

    def log_steps(self):
        step = self.step
        tf.summary.scalar("train/loss", self.train_loss.result(), step)
        tf.summary.scalar("train/accuracy", self.train_accuracy.result(), step)
        tf.summary.scalar("train/learning_rate", self.optimizer.learning_rate, step)
        tf.summary.scalar("sparsity/generated", float(self.schedule(step - 1)[1]), step)
        learned = self.pruner.sparsity()
        tf.summary.scalar("sparsity/learned", learned, step)
        log.debug("search step %d/%d %s", step, self.total_steps, self.summary(learned))

    def score_batches(self):
        split = self.splits.validation
        if self.config.score_images:
            split = Split(split.images[:self.config.score_images], split.labels[:self.config.score_images])
        return data.eval_dataset(split, self.splits.info, self.config.score_batch_size).cache()

    def accuracy(self, runs):
        """Accuracy over (architecture, its 1x1 kernels, images, labels) runs, with BN's moving
        statistics."""
        correct = total = 0
        for arch, kernels, images, labels in runs:
            logits = self.network.forward(images, arch, kernels, training=False)
            correct += int(tf.reduce_sum(tf.cast(tf.argmax(logits, -1, output_type=labels.dtype) == labels, tf.int32)))
            total += int(tf.size(labels))
        return correct / total

    def error(self, arch, index, batches):
        """Validation error of `arch` with its generated weights pruned to the target and the
        learned ones as pruned (BN moving statistics): the SMASH score."""
        kernels = self.network.op_kernels(arch, *self.inputs(arch, SCORE_NOISE, index), self.schedule,
                                          self.total_steps)
        return 1.0 - self.accuracy((arch, kernels, images, labels) for images, labels in batches)

    def random_architecture_accuracy(self, epoch):
        """The reference's per-epoch validation: a random architecture per batch, its weights
        pruned as they are now."""
        def runs():
            for index, (images, labels) in enumerate(self.score_batches()):
                arch = self.sample(self.step, VALIDATION, epoch, index)
                inputs = self.inputs(arch, VALIDATION, epoch, index)
                yield arch, self.network.op_kernels(arch, *inputs, self.schedule, self.step), images, labels
        return self.accuracy(runs())

    def search(self):
        self.loop.run_epochs(lambda: self.step, self.search_epoch, DASHBOARD)

    def score_architectures(self, scored):
        """Random architectures, perturbations of the best of them, then greedy steps from the
        best so far, each perturbing the current architecture and moving only to a better one
        (the reference's evaluate.py); each scored by `error`. `scored` holds earlier results of
        this same sequence (a resumed run) and is extended in place. Returns the candidates,
        best first."""
        config, batches = self.config, self.score_batches()
        rng = self.rng(SCORING)
        plan = [("random", config.num_random), ("perturbed", config.num_perturbed), ("markov", config.num_markov)]
        index, best, current = 0, None, None
        for stage, count in plan:
            current = best
            for _ in range(count):
                if stage == "random":
                    arch = space_lib.sample(self.space, rng)
                else:
                    arch = space_lib.perturb(current[0], rng, config.perturb_probability)
                if index < len(scored):
                    error = scored[index]["validation_error"]
                else:
                    error = self.error(arch, index, batches)
                    scored.append({"architecture": arch.to_text(), "stage": stage, "index": index,
                                   "num_ops": arch.num_ops(), "validation_error": error})
                    self.save_scores(scored)
                if best is None or error < best[1]:
                    best = (arch, error)
                if stage == "markov" and error < current[1]:
                    current = (arch, error)
                index += 1
        return sorted(scored, key=lambda c: (c["validation_error"], c["index"]))

    def save_scores(self, scored):
        write_json_atomic(self.run.path / "scores.json", scored)
        if len(scored) % 10 == 0:
            log.info("scored %d architectures; best validation error so far %.4f", len(scored),
                     min(c["validation_error"] for c in scored))


def write_scoring_summaries(candidates, step):
    """The candidates' validation errors as a histogram at `step`, and in scoring order (the
    step is how many were scored) each one's error and the best so far."""
    errors = [c["validation_error"] for c in sorted(candidates, key=lambda c: c["index"])]
    tf.summary.histogram("candidates/validation_error", errors, step)
    for count, (error, best) in enumerate(zip(errors, np.minimum.accumulate(errors)), start=1):
        tf.summary.scalar("scoring/validation_error", error, count)
        tf.summary.scalar("scoring/best_validation_error", best, count)


def run_search(config, load_splits, run_dir, strategy=None):
    """Train the HyperNet, score architectures, train the best from scratch; returns the
    results. `load_splits(validation_fraction)` gives the dataset's splits."""
    run = claim_run(config, run_dir)
    if (finished := run.finished_results()) is not None:
        return finished
    searched, splits = search_splits(config, load_splits)
    search = SmashSearch(config, searched, run_dir, strategy)
    search.search()
    scores_file = run.path / "scores.json"
    candidates = search.score_architectures(read_json(scores_file) if scores_file.exists() else [])
    write_json_atomic(run.path / "candidates.json", candidates)
    with tf.summary.create_file_writer(str(run.tensorboard)).as_default():
        write_scoring_summaries(candidates, search.step)
    arch_spec = f"smash:{candidates[0]['architecture']}"
    write_text_atomic(run.path / "architecture.txt", arch_spec + "\n")
    log.info("best of %d architectures (validation error %.4f): %s", len(candidates),
             candidates[0]["validation_error"], arch_spec)
    final_config = config.final_train_config(arch_spec)
    final_data = final_splits(config, splits, load_splits)
    final = trainer.train(architectures.model_builder(final_config, final_data.info),
                          final_data, final_config, run.path / "final", strategy)
    results = results_of(search, config, arch_spec, final, "final",
                         learned_weight_sparsity=search.pruner.sparsity(),
                         generated_weight_sparsity=float(search.schedule(search.total_steps)[1]),
                         chosen_candidate_validation_error=candidates[0]["validation_error"],
                         num_scored=len(candidates))
    write_json_atomic(run.results, results)
    return results
