"""The configs' common fields, declared once: `RunConfig` (data, length, learning rate, the
sparsity target and its schedule, seed, logging), which `TrainConfig` (a from-scratch
training) extends, and `SearchConfig` (a searcher's: its method and the final from-scratch
training of what it found), which the four searchers' configs extend; each field carries the help text its CLI flag shows.
The defaults are generic; the `paper` presets (configs.py) hold each reference's values.
"""
import dataclasses

from scas_tf import data, pruning
from scas_tf.errors import ScasError


def option(default, help_text):
    """A config field with its help text, from which the CLI makes a flag."""
    return dataclasses.field(default=default, metadata={"help": help_text})


def require_positive(config, names):
    """A one-line error for the first of these config fields that is not > 0."""
    for name in names:
        if getattr(config, name) <= 0:
            raise ScasError(f"{name} must be positive, got {getattr(config, name)}")


def require_fraction(config, names, closed=False):
    """A one-line error for the first of these fields outside [0, 1) ([0, 1] if closed)."""
    for name in names:
        value = getattr(config, name)
        if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
            raise ScasError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What every training or search run has (a resumed run must match its config exactly)."""
    dataset: str = option("mnist_mini", "Dataset: mnist_mini (embedded), mnist, cifar10, cifar100.")
    epochs: int = option(10, "Epochs (passes over the training split).")
    batch_size: int = option(128, "Global batch size (split across replicas).")
    learning_rate: float = option(0.1, "Peak learning rate of the cosine schedule.")
    min_learning_rate: float = option(0.0, "Learning rate at the end of the cosine schedule (of each "
                                      "period, with restarts).")
    validation_fraction: float = option(0.1, "Fraction of the training set held out for validation.")
    target_sparsity: float = option(0.0, "Fraction of every prunable kernel pruned by the end, in [0, 1).")
    pruning_begin: float = option(0.1, "Fraction of the run at which gradual pruning starts.")
    pruning_end: float = option(0.6, "Fraction of the run by which target_sparsity is reached.")
    pruning_frequency: int = option(0, "Steps between mask updates; 0 means about 50 updates in all.")
    seed: int = option(0, "Seed of initialisation, validation split, order and augmentation.")
    log_every_steps: int = option(50, "Steps between TensorBoard points (and log lines at --verbosity=1).")
    checkpoint_every_steps: int = option(500, "Steps between checkpoints inside an epoch (one is always "
                                         "taken at an epoch's end); 0 = at epochs' ends only.")

    def __post_init__(self):
        require_positive(self, ("epochs", "batch_size", "log_every_steps"))
        require_fraction(self, ("target_sparsity",))
        if not 0.0 <= self.pruning_begin < self.pruning_end <= 1.0:
            raise ScasError(f"need 0 <= pruning_begin < pruning_end <= 1, got "
                            f"{self.pruning_begin}, {self.pruning_end}")
        if self.learning_rate <= 0 or self.min_learning_rate < 0:
            raise ScasError("learning rates must be positive")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ScasError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if min(self.pruning_frequency, self.checkpoint_every_steps) < 0:
            raise ScasError("pruning_frequency and checkpoint_every_steps must not be negative")
        data.dataset_info(self.dataset)

    def pruning_config(self, total_steps):
        return pruning.gradual_config(self.target_sparsity, total_steps, self.pruning_begin,
                                      self.pruning_end, self.pruning_frequency)


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunConfig):
    """A from-scratch training run of one architecture (`scas train`, a searcher's final training)."""
    arch: str = option("small_cnn", "Architecture: a baseline CNN's name, or '<space>:<encoding>' "
                       "of a searched one (see --arch_file).")
    filters: int = option(0, "Width of a searched architecture (first-stage filters); 0 = its default.")
    num_layers: int = option(0, "Cells of a searched ENAS-micro or DARTS architecture; 0 = its default.")
    lr_restart_epochs: float = option(0.0, "SGDR (cosine with warm restarts): epochs of the first "
                                      "period, each next one lr_restart_mult times longer; 0 = one "
                                      "cosine over the whole run.")
    lr_restart_mult: float = option(2.0, "SGDR: growth of each restart period over the previous one.")
    warmup_epochs: float = option(0.0, "Linear warm-up from 0 to learning_rate, in epochs.")
    momentum: float = option(0.9, "SGD momentum.")
    nesterov: bool = option(True, "Use Nesterov momentum.")
    weight_decay: float = option(5e-4, "L2 decay on conv/dense kernels (as PyTorch SGD's weight_decay: "
                                 "the loss gains weight_decay/2 * sum(w^2)).")
    decay_all_variables: bool = option(False, "Decay every trainable variable (BN scale and offset, "
                                       "biases too), as ENAS's reference does; else kernels only.")
    label_smoothing: float = option(0.0, "Label smoothing of the training loss.")
    grad_clip_norm: float = option(0.0, "Clip gradients to this global norm; 0 disables clipping.")
    dropout: float = option(None, "Dropout before a searched network's classifier; unset = its "
                            "builder's default.")
    auxiliary_weight: float = option(0.0, "Weight of a searched network's auxiliary-head loss; 0 = no head.")
    drop_path: float = option(0.0, "Drop-path rate of a searched network at the end of training "
                              "(rising linearly from 0; ENAS scales it by depth).")
    cutout: int = option(0, "Cutout square side in pixels; 0 disables cutout.")

    def __post_init__(self):
        super().__post_init__()
        require_fraction(self, ("label_smoothing", "drop_path"))
        if min(self.filters, self.num_layers, self.weight_decay,
               self.warmup_epochs, self.auxiliary_weight, self.cutout) < 0:
            raise ScasError("filters, num_layers, weight_decay, warmup_epochs, "
                            "auxiliary_weight and cutout must not be negative")
        if self.dropout is not None:
            require_fraction(self, ("dropout",))
        if self.lr_restart_epochs < 0 or self.lr_restart_mult < 1:
            raise ScasError(f"need lr_restart_epochs >= 0 and lr_restart_mult >= 1, got "
                            f"{self.lr_restart_epochs}, {self.lr_restart_mult}")
        if self.lr_restart_epochs and self.warmup_epochs:
            raise ScasError("warmup_epochs and lr_restart_epochs cannot be combined")


@dataclasses.dataclass(frozen=True)
class SearchConfig(RunConfig):
    """A search: RunConfig's fields describe the search itself (pruned under the same target
    as the final training), the final_* fields the from-scratch training of its result.
    Subclasses list their methods in METHODS (the first is the default) and complete the final
    training's TrainConfig in `final_training()`."""
    METHODS = ()
    method: str = option(None, "Search method: enas_macro, enas_micro, darts or smash.")
    search_images: int = option(0, "Search on only this many training-set images, split into search "
                                "training and validation in proportion (0 = all); the final training "
                                "uses them all.")
    final_epochs: int = option(10, "Epochs of the final from-scratch training.")
    final_batch_size: int = option(128, "Batch size of the final training.")
    final_learning_rate: float = option(0.1, "Peak learning rate of the final training.")
    final_min_learning_rate: float = option(0.0, "Final learning rate of the final training (of each "
                                            "SGDR period, for ENAS).")
    final_validation_fraction: float = option(0.1, "Fraction of the training set held out during the "
                                              "final training.")
    final_auxiliary_weight: float = option(0.0, "Weight of the final network's auxiliary-head loss; 0 = no head.")
    final_drop_path: float = option(0.0, "Drop-path rate of the final network at the end of training "
                                    "(ENAS: of its last cell; shallower cells drop less).")
    final_cutout: int = option(0, "Cutout side in the final training; 0 disables it.")

    def __post_init__(self):
        if self.method is None:
            object.__setattr__(self, "method", self.METHODS[0])
        if self.method not in self.METHODS:
            raise ScasError(f"{type(self).__name__} is for method {' or '.join(self.METHODS)}, not {self.method!r}")
        super().__post_init__()
        require_positive(self, ("final_epochs", "final_batch_size"))
        if self.search_images < 0:
            raise ScasError(f"search_images must not be negative, got {self.search_images}")
        self.final_train_config()  # validates the final training's fields

    def final_training(self):
        """The final TrainConfig's fields this searcher sets beyond the shared ones."""
        return {}

    def final_train_config(self, arch_spec="small_cnn"):
        return TrainConfig(
            arch=arch_spec, dataset=self.dataset, epochs=self.final_epochs, batch_size=self.final_batch_size,
            learning_rate=self.final_learning_rate, min_learning_rate=self.final_min_learning_rate,
            validation_fraction=self.final_validation_fraction, target_sparsity=self.target_sparsity,
            pruning_begin=self.pruning_begin, pruning_end=self.pruning_end,
            pruning_frequency=self.pruning_frequency, seed=self.seed, log_every_steps=self.log_every_steps,
            checkpoint_every_steps=self.checkpoint_every_steps, auxiliary_weight=self.final_auxiliary_weight, drop_path=self.final_drop_path,
            cutout=self.final_cutout, **self.final_training())
