"""SCAS on DARTS (paper Algorithm 2): differentiable search with alpha trained on pruned weights.

Each search step, on one training and one validation minibatch:
    1. weight step: SGD on the training loss with alpha frozen (pruned weights' gradients blocked)
    2. pruning step: masks follow the schedule at the weight optimiser's step (only weight steps
       move it; the alpha passes below never do)
    3. alpha step: Adam on the validation loss of the *pruned* weights, first order, or second
       order (`unrolled`): the gradient at the weights after a virtual SGD step, minus
       eta * a finite-difference Hessian-vector product (reference: cnn/architect.py)
At the end the genotype is derived from softmax(alpha) and trained from scratch under the same
sparsity target (the shared trainer). BN in the search network normalises by batch statistics
in every training-mode pass, as the reference's (always model.train()) search does.
"""
import dataclasses
import logging

import numpy as np
import tensorflow as tf
import tf_keras as keras

from scas_tf import architectures, data, figures, pruning, trainer
from scas_tf.config import SearchConfig, option, require_positive
from scas_tf.errors import ScasError
from scas_tf.models.darts import SearchNetwork
from scas_tf.resumable import Resumable
from scas_tf.run_dir import RunDir, read_json, write_json_atomic, write_text_atomic
from scas_tf.search.loop import claim_run, final_splits, results_of, search_splits
from scas_tf.spaces.darts import CELL_TYPES, PRIMITIVES, derive, edge_labels, edges

log = logging.getLogger("scas")
SUM = tf.distribute.ReduceOp.SUM
HESSIAN_R = 0.01  # the reference's finite-difference step: r / ||v||
DASHBOARD = ("darts search", [
    ("loss: weight steps, alpha steps, search network on validation",
     ["train/loss", "alpha/validation_loss", "validation/loss"]),
    ("accuracy: weight steps, search network on validation", ["train/accuracy", "validation/accuracy"]),
    ("sparsity: achieved vs scheduled", ["sparsity/achieved", "sparsity/scheduled"]),
    ("softmax(alpha) per op, mean over the normal cell's edges", ["alpha/normal/"]),
    ("softmax(alpha) per op, mean over the reduction cell's edges", ["alpha/reduce/"]),
    ("learning rate", ["train/learning_rate"]),
])


@dataclasses.dataclass(frozen=True)
class DartsConfig(SearchConfig):
    """A DARTS search and the final training of its genotype. The fields below default to the
    reference's (cnn/train_search.py, cnn/train.py); the `paper` preset sets the shared ones
    too (configs.py). validation_fraction is the share of the training set that trains alpha."""
    METHODS = ("darts",)
    num_layers: int = option(8, "Cells of the search network.")
    filters: int = option(16, "Initial channels (C) of the search network.")
    momentum: float = option(0.9, "Weights' SGD momentum (plain, not Nesterov).")
    weight_decay: float = option(3e-4, "L2 decay on the weights' kernels.")
    grad_clip_norm: float = option(5.0, "Weights' gradient clipping (global norm); 0 disables it.")
    unrolled: bool = option(False, "Second-order alpha gradient (unrolled virtual step, "
                            "finite-difference Hessian-vector product); default first order.")
    alpha_learning_rate: float = option(3e-4, "Alpha's Adam learning rate.")
    alpha_beta1: float = option(0.5, "Alpha's Adam beta_1 (beta_2 is 0.999).")
    alpha_weight_decay: float = option(1e-3, "L2 decay on alpha.")
    kept_cells: int = option(3, "Search cells, counted from the network's end, that keep their "
                             "activations for the backward pass; the others recompute theirs there, "
                             "a forward pass each (recomputing all takes about half the memory of "
                             "keeping all; the last 3 of 8 cost none).")
    alpha_kept_cells: int = option(5, "kept_cells of the passes w.r.t. alpha alone, which keep no "
                                   "tensors for weight gradients: at 8 cells, C=16, batch 64 the last 5 "
                                   "take as much memory as the last 3 in a pass w.r.t. the weights.")
    final_filters: int = option(36, "Initial channels of the final network.")
    final_num_layers: int = option(20, "Cells of the final network.")

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, ("num_layers", "filters", "alpha_learning_rate"))
        for field in ("kept_cells", "alpha_kept_cells"):
            if getattr(self, field) < 0:
                raise ScasError(f"{field} must not be negative, got {getattr(self, field)}")
        if self.num_layers < 3:
            raise ScasError(f"darts needs num_layers >= 3 (two reduction cells), got {self.num_layers}")
        if not 0.0 <= self.momentum < 1.0 or not 0.0 <= self.alpha_beta1 < 1.0:
            raise ScasError("momentum and alpha_beta1 must be in [0, 1)")
        if min(self.alpha_weight_decay, self.weight_decay, self.grad_clip_norm) < 0:
            raise ScasError("weight decays and grad_clip_norm must not be negative")

    def final_training(self):
        return dict(momentum=self.momentum, nesterov=False, weight_decay=self.weight_decay,
                    grad_clip_norm=self.grad_clip_norm, filters=self.final_filters,
                    num_layers=self.final_num_layers)


class DartsSearch:
    """The search network (weights and alpha), both optimisers and the pruner, under a strategy."""

    def __init__(self, config, splits, run_dir, strategy=None):
        self.config, self.splits, self.run = config, splits, RunDir(run_dir)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.steps_per_epoch = data.steps_per_epoch(splits.train, config.batch_size)
        data.steps_per_epoch(splits.validation, config.batch_size)  # a clear error if too small
        self.total_steps = config.epochs * self.steps_per_epoch
        self.pruning_config = pruning.gradual_config(
            config.target_sparsity, self.total_steps, config.pruning_begin, config.pruning_end,
            config.pruning_frequency)
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.network = SearchNetwork(splits.info, config.filters, config.num_layers, config.kept_cells)
            self.optimizer = trainer.make_sgd(config.learning_rate, config.min_learning_rate,
                                              self.total_steps, momentum=config.momentum,
                                              nesterov=False, grad_clip_norm=config.grad_clip_norm)
            # Built on exactly the weights, so that momentums[i] belongs to weight_variables[i].
            self.optimizer.build(self.network.weight_variables)
            self.alpha_optimizer = keras.optimizers.Adam(config.alpha_learning_rate, beta_1=config.alpha_beta1,
                                                         beta_2=0.999, epsilon=1e-8)
            self.alpha_optimizer.build(self.network.alpha_variables)
            self.pruner = pruning.Pruner(self.network, self.pruning_config)
            self.train_loss = keras.metrics.Mean()
            self.train_accuracy = keras.metrics.SparseCategoricalAccuracy()
            self.alpha_loss = keras.metrics.Mean()
            self.eval_loss = keras.metrics.SparseCategoricalCrossentropy(from_logits=True)
            self.eval_accuracy = keras.metrics.SparseCategoricalAccuracy()
            self.search_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.loop = Resumable(self.run, config, self.total_steps, self.steps_per_epoch, "search_seconds",
                              network=self.network, optimizer=self.optimizer, alpha_optimizer=self.alpha_optimizer,
                              search_seconds=self.search_seconds)

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    # -- the three parts of a search step -------------------------------------------------
    # Every pass is one of two traced functions (gradients w.r.t. alpha and weights, or alpha
    # alone), so the unrolled step's five passes do not make five copies of the network's graph.

    @tf.function
    def loss_gradients(self, images, labels, wrt):
        """This replica's share of the mean cross-entropy's gradients w.r.t. alpha (wrt
        "alpha") or alpha then the weights (wrt "all"); also the per-example loss and logits."""
        variables, kept_cells = self.network.alpha_variables, self.config.alpha_kept_cells
        if wrt == "all":
            variables, kept_cells = variables + self.network.weight_variables, self.config.kept_cells
        with tf.GradientTape() as tape:
            logits = self.network(images, training=True, kept_cells=kept_cells)
            per_example = trainer.cross_entropy(labels, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.config.batch_size)
        return tape.gradient(loss, variables), per_example, logits

    def with_weight_decay(self, gradients, share=1.0):
        """Adds the L2 decay's gradient (a `share` of it) to the weights' gradients."""
        decay = self.config.weight_decay * share
        return [g + decay * w if trainer.is_kernel(w) else g
                for g, w in zip(gradients, self.network.weight_variables)]

    def replica_weight_step(self, images, labels):
        gradients, per_example, logits = self.loss_gradients(images, labels, "all")
        share = 1.0 / self.strategy.num_replicas_in_sync  # the replicas' gradients are summed
        weight_gradients = self.with_weight_decay(gradients[len(self.network.alpha_variables):], share)
        trainer.apply_pruned_gradients(self.optimizer, self.pruner, weight_gradients,
                                       self.network.weight_variables)
        self.train_loss.update_state(per_example)
        self.train_accuracy.update_state(labels, logits)

    def replica_alpha_step(self, images, labels):
        """First order: alpha descends the validation loss at the current (pruned) weights."""
        gradients, per_example, _ = self.loss_gradients(images, labels, "alpha")
        self.apply_alpha_gradients(gradients, 1.0 / self.strategy.num_replicas_in_sync)
        self.alpha_loss.update_state(per_example)

    def apply_alpha_gradients(self, gradients, share=1.0):
        alphas = self.network.alpha_variables
        decay = self.config.alpha_weight_decay * share
        self.alpha_optimizer.apply_gradients((g + decay * a, a) for g, a in zip(gradients, alphas))

    def gradients(self, batch, wrt):
        """loss_gradients over the whole (distributed) batch, in cross-replica context."""
        gradients, per_example, _ = self.strategy.run(self.loss_gradients, args=(*batch, wrt))
        return [self.strategy.reduce(SUM, g, axis=None) for g in gradients], per_example

    def assign_weights(self, values):
        for w, v in zip(self.network.weight_variables, values):
            w.assign(v)

    def unrolled_alpha_gradients(self, train_batch, valid_batch):
        """Second order, in cross-replica context: d/d alpha of L_val(w', alpha) with
        w' = prune(w - eta * (momentum buffer + grad_w L_train(w, alpha))), approximated as the
        reference does: grad_alpha L_val(w') - eta * [grad_alpha L_train(w+) - grad_alpha L_train(w-)] / 2r
        with w+- = w +- r v, v = grad_w' L_val(w') (restricted to unpruned weights), r = 0.01 / |v|.
        The weights end as they began and the schedule's step does not move. (Stateful ops run
        in program order inside tf.function, so each pass sees the weights assigned before it.)"""
        weights, num_alphas = self.network.weight_variables, len(self.network.alpha_variables)
        eta = tf.cast(self.optimizer.learning_rate, tf.float32)
        saved = [tf.identity(w) for w in weights]
        train_grads, _ = self.gradients(train_batch, "all")
        train_grads = self.pruner.mask_gradients(self.with_weight_decay(train_grads[num_alphas:]), weights)
        # Keras keeps m = momentum * m - lr * g (PyTorch: b = momentum * b + g, w -= lr * b), so the
        # reference's virtual step w - eta * (momentum * b + g) is w + momentum * m - eta * g.
        momentum = self.config.momentum
        self.assign_weights([w + momentum * m - eta * g
                             for w, m, g in zip(saved, self.optimizer.momentums, train_grads)])
        self.pruner.apply_masks()
        valid_grads, per_example = self.gradients(valid_batch, "all")
        direct, v = valid_grads[:num_alphas], self.pruner.mask_gradients(valid_grads[num_alphas:], weights)
        r = HESSIAN_R / (tf.linalg.global_norm(v) + 1e-12)
        self.assign_weights([s + r * d for s, d in zip(saved, v)])
        plus, _ = self.gradients(train_batch, "alpha")
        self.assign_weights([s - r * d for s, d in zip(saved, v)])
        minus, _ = self.gradients(train_batch, "alpha")
        self.assign_weights(saved)
        return [d - eta * (p - m) / (2.0 * r) for d, p, m in zip(direct, plus, minus)], per_example

    def unrolled_alpha_step(self, train_batch, valid_batch):
        gradients, per_example = self.unrolled_alpha_gradients(train_batch, valid_batch)
        self.apply_alpha_gradients(gradients)
        self.strategy.run(self.alpha_loss.update_state, args=(per_example,))

    @tf.function
    def search_steps(self, train_iterator, valid_iterator, num_steps):
        """num_steps search steps (weight step, pruning step, alpha step) in one graph call."""
        for _ in tf.range(num_steps):
            train_batch, valid_batch = next(train_iterator), next(valid_iterator)
            self.strategy.run(self.replica_weight_step, args=train_batch)
            self.pruner.update_masks(self.optimizer.iterations)
            if self.config.unrolled:
                self.unrolled_alpha_step(train_batch, valid_batch)
            else:
                self.strategy.run(self.replica_alpha_step, args=valid_batch)

    # -- the loop ---------------------------------------------------------------------------

    def streams(self, epoch, start):
        """The epoch's training and validation minibatches from its `start`-th step on (the
        validation split may be smaller and then repeats within the epoch)."""
        def stream(split, seed):
            dataset = data.train_dataset(split, self.splits.info, self.config.batch_size, seed, epoch)
            return iter(self.strategy.experimental_distribute_dataset(dataset.repeat().skip(start)))
        return stream(self.splits.train, self.config.seed), stream(self.splits.validation, self.config.seed + 1)

    def search_epoch(self, epoch):
        train_iterator, valid_iterator = self.streams(epoch, self.step - epoch * self.steps_per_epoch)
        while self.step < (epoch + 1) * self.steps_per_epoch:
            for metric in (self.train_loss, self.train_accuracy, self.alpha_loss):
                metric.reset_state()
            self.search_steps(train_iterator, valid_iterator, tf.constant(self.loop.next_chunk(self.step)))
            self.log_steps()
            self.loop.after_chunk(self.step, self.train_loss.result() + self.alpha_loss.result(),
                                  self.network.trainable_variables)
        self.log_epoch_end(epoch)

    def log_steps(self):
        step = self.step
        sparsity = self.pruner.sparsity()
        tf.summary.scalar("train/loss", self.train_loss.result(), step)
        tf.summary.scalar("train/accuracy", self.train_accuracy.result(), step)
        tf.summary.scalar("train/learning_rate", self.optimizer.learning_rate, step)
        tf.summary.scalar("alpha/validation_loss", self.alpha_loss.result(), step)
        tf.summary.scalar("sparsity/scheduled", self.pruner.sparsity_at(step), step)
        tf.summary.scalar("sparsity/achieved", sparsity, step)
        log.debug("search step %d/%d loss %.4f accuracy %.4f alpha-step validation loss %.4f sparsity %.3f",
                 step, self.total_steps, self.train_loss.result(), self.train_accuracy.result(),
                 self.alpha_loss.result(), sparsity)

    @tf.function
    def eval_step(self, batch):
        def replica_eval_step(images, labels):
            logits = self.network(images, training=False)
            self.eval_loss.update_state(labels, logits)
            self.eval_accuracy.update_state(labels, logits)
        self.strategy.run(replica_eval_step, args=batch)

    def evaluate(self):
        """The pruned search network on the whole validation split (BN moving statistics)."""
        self.eval_loss.reset_state()
        self.eval_accuracy.reset_state()
        dataset = data.eval_dataset(self.splits.validation, self.splits.info, 2 * self.config.batch_size)
        for batch in self.strategy.experimental_distribute_dataset(dataset):
            self.eval_step(batch)
        return float(self.eval_loss.result()), float(self.eval_accuracy.result())

    def genotype(self):
        return derive(*(self.network.alphas[t].numpy() for t in CELL_TYPES))

    def op_weights(self):
        """softmax(alpha) per cell type, as arrays [edges, ops]."""
        return {t: w.numpy() for t, w in self.network.op_weights().items()}

    def log_epoch_end(self, epoch):
        """Validation figures, softmax(alpha) as heat maps and per-op means, the genotype."""
        step = self.step
        val_loss, val_accuracy = self.evaluate()
        tf.summary.scalar("validation/loss", val_loss, step)
        tf.summary.scalar("validation/accuracy", val_accuracy, step)
        genotype = self.genotype()
        write_alpha_summaries(self.op_weights(), genotype, f"after epoch {epoch + 1}", step)
        history = self.run.path / "genotypes.json"
        earlier = [g for g in (read_json(history) if history.exists() else []) if g["epoch"] < epoch + 1]
        write_json_atomic(history, earlier + [{"epoch": epoch + 1, "step": step, "genotype": genotype.to_text(),
                                               "validation_accuracy": val_accuracy}])
        log.debug("genotype %s", genotype.to_text())
        self.loop.end_epoch(step, val_loss, self.network.trainable_variables, (
            f"loss {self.train_loss.result():.4f} accuracy {self.train_accuracy.result():.4f} alpha-step "
            f"validation loss {self.alpha_loss.result():.4f} sparsity "
            f"{self.pruner.sparsity():.3f}, search network validation loss "
            f"{val_loss:.4f} accuracy {val_accuracy:.4f}"))

    def search(self):
        """Runs (or resumes, at its last checkpoint) the search."""
        self.loop.run_epochs(lambda: self.step, self.search_epoch, DASHBOARD)


def alpha_heatmap(cell_type, weights, genotype, when):
    """softmax(alpha) of one cell type: a row per edge, a column per op, and the genotype's
    (edge, op) pairs outlined."""
    cell, _ = genotype.cell(cell_type)
    marked = tuple((edges().index((k // 2, state)), PRIMITIVES.index(op)) for k, (op, state) in enumerate(cell))
    title = f"{cell_type} cell: softmax(α) {when}\n(outlined: the derived genotype's edges and ops)"
    return figures.Heatmap(title, edge_labels(), PRIMITIVES, weights, marked)


def write_alpha_summaries(op_weights, genotype, when, step):
    """Per cell type, softmax(alpha) as a heat map (image) and each op's mean over the edges
    (scalars); the genotype derived from them (text)."""
    for cell_type, weights in op_weights.items():
        figures.write_heatmap_summary(f"alpha/{cell_type}", alpha_heatmap(cell_type, weights, genotype, when), step)
        for op, mean in zip(PRIMITIVES, np.mean(weights, axis=0)):
            tf.summary.scalar(f"alpha/{cell_type}/{op}", mean, step)
    tf.summary.text("genotype", genotype.to_text(), step)


def run_search(config, load_splits, run_dir, strategy=None):
    """Search, derive the genotype, write it, train it from scratch; returns the results.
    `load_splits(validation_fraction)` gives the dataset's splits."""
    run = claim_run(config, run_dir)
    if (finished := run.finished_results()) is not None:
        return finished
    searched, splits = search_splits(config, load_splits)
    search = DartsSearch(config, searched, run_dir, strategy)
    search.search()
    genotype, op_weights = search.genotype(), search.op_weights()
    arch_spec = architectures.spec("darts", genotype)
    write_text_atomic(run.path / "architecture.txt", arch_spec + "\n")
    alpha = {t: np.round(w, 6).tolist() for t, w in op_weights.items()}
    write_json_atomic(run.path / "alpha.json", {"primitives": list(PRIMITIVES), "softmax_alpha": alpha})
    figures.save_heatmaps(run.path / "alpha.png", *(alpha_heatmap(t, w, genotype, "after the search")
                                                    for t, w in op_weights.items()))
    log.info("derived %s", arch_spec)
    final_config = config.final_train_config(arch_spec)
    final_data = final_splits(config, splits, load_splits)
    final = trainer.train(architectures.model_builder(final_config, final_data.info),
                          final_data, final_config, run.path / "final", strategy)
    val_loss, val_accuracy = search.evaluate()
    results = results_of(search, config, arch_spec, final, "final", unrolled=config.unrolled,
                         search_weight_sparsity=search.pruner.sparsity(),
                         search_validation_loss=val_loss, search_validation_accuracy=val_accuracy)
    write_json_atomic(run.results, results)
    return results
