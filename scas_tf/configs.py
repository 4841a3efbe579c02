"""Presets: named configurations, as data. Flags given on the command line override them.

Each preset says what it costs on the project's reference machine (2 CPU cores, no GPU) and
what it should reach.
"""
import dataclasses

from scas_tf.errors import ScasError
from scas_tf.search.darts import DartsConfig
from scas_tf.search.enas import METHODS as ENAS_METHODS
from scas_tf.search.enas import EnasConfig
from scas_tf.trainer import TrainConfig

TRAIN_PRESETS = {
    # small_cnn on the embedded mnist_mini (4,500 training images): about a minute on 2 cores;
    # about 98% test accuracy dense or at 90% sparsity. On full MNIST with --epochs=12: 99.25%
    # at 90% sparsity in 8 minutes.
    "standard": TrainConfig(),
    # End-to-end smoke test: a few seconds on 2 cores; accuracy is meaningless.
    "tiny": TrainConfig(epochs=2, batch_size=32, log_every_steps=10, pruning_end=0.5, validation_fraction=0.2),
}

# The reference implementation's settings (melodyguan/enas scripts/cifar10_*_{search,final}.sh).
# Days of GPU time for CIFAR-10; not meant for a CPU.
ENAS_PAPER = {
    "enas_macro": EnasConfig(method="enas_macro", final_filters=96, final_batch_size=100),
    "enas_micro": EnasConfig(
        method="enas_micro", num_layers=6, filters=20, epochs=150, batch_size=160,
        weight_decay=1e-4, controller_learning_rate=3.5e-3, tanh_constant=1.1, op_tanh_reduce=2.5,
        skip_weight=0.0, controller_steps=30, controller_batch=10, final_epochs=630,
        final_filters=36, final_num_layers=15, final_batch_size=144),
}

# A reduced budget for 2 CPU cores: on full MNIST (54,000 training images) an enas_macro search
# takes about 13 minutes and the final training (8 epochs, 32 filters, about 1M parameters)
# about 14; at 90% sparsity the found network reached 99.37% test accuracy. Pruning starts a
# quarter of the way in, once the shared weights have learned something to rank.
ENAS_CPU = dict(num_layers=6, filters=20, epochs=8, controller_steps=20, controller_batch=10,
                num_candidates=50, candidate_batches=4, final_epochs=8, final_filters=32,
                final_batch_size=128, final_learning_rate=0.1, learning_rate=0.1,
                min_learning_rate=1e-3, pruning_begin=0.25, pruning_end=0.75)
# Micro at this size: on the default mnist_mini the whole command (search + final training)
# takes about 7 minutes and reached 98.3% at 90% sparsity; its supernet trains about half as
# many images/s as macro's (experiments/benchmark_enas.py), so full MNIST takes about an hour.
ENAS_CPU_MICRO = dict(num_layers=2, filters=12, batch_size=128, final_num_layers=4, final_filters=24)

# End-to-end smoke test on mnist_mini: well under a minute; results are meaningless.
ENAS_TINY = dict(num_layers=3, filters=4, epochs=1, batch_size=64, controller_steps=2,
                 controller_batch=3, num_candidates=4, candidate_batches=1, final_epochs=1,
                 final_filters=4, final_batch_size=64, validation_fraction=0.2, log_every_steps=20)
ENAS_TINY_MICRO = dict(num_layers=1, final_num_layers=1)


def enas_preset(method, preset):
    """The EnasConfig of a preset (paper, cpu or tiny) for enas_macro or enas_micro."""
    paper = ENAS_PAPER[method]
    if preset == "paper":
        return paper
    overrides = {"cpu": ENAS_CPU, "tiny": ENAS_TINY}[preset]
    if method == "enas_micro":
        overrides = {**overrides, **{"cpu": ENAS_CPU_MICRO, "tiny": ENAS_TINY_MICRO}[preset]}
    return dataclasses.replace(paper, **overrides)


# The reference's settings (quark0/darts cnn/train_search.py, cnn/train.py) are DartsConfig's
# defaults: CIFAR-10, about 4 GPU-days second order; not meant for a CPU.
DARTS_PAPER = DartsConfig()

# A reduced budget for 2 CPU cores on MNIST: search 5 cells of C=8 on 10,000 training images
# (5,000 weights / 5,000 alpha), then train the genotype (6 cells, C=16, auxiliary head) on the
# full training set. See the README for the figures it reached.
DARTS_CPU = dict(dataset="mnist", num_layers=5, filters=8, epochs=4, batch_size=64, search_images=10_000,
                 log_every_steps=25, final_epochs=4, final_filters=16, final_num_layers=6,
                 final_batch_size=96, final_learning_rate=0.05, drop_path=0.1, cutout=0)

# End-to-end smoke test on mnist_mini: about a minute (mostly tracing); results are meaningless.
DARTS_TINY = dict(dataset="mnist_mini", num_layers=3, filters=2, epochs=1, batch_size=64,
                  search_images=1024, log_every_steps=4, final_epochs=1, final_filters=4,
                  final_num_layers=3, final_batch_size=64, final_validation_fraction=0.2, cutout=4)

SEARCH_PRESETS = ("paper", "cpu", "tiny")
SEARCH_METHODS = (*ENAS_METHODS, "darts")


def search_preset(method, preset):
    """The config of a search preset (paper, cpu or tiny) for a search method."""
    if method not in SEARCH_METHODS:
        raise ScasError(f"unknown method {method!r}; choose one of {', '.join(SEARCH_METHODS)}")
    if preset not in SEARCH_PRESETS:
        raise ScasError(f"unknown search preset {preset!r}; choose one of {', '.join(SEARCH_PRESETS)}")
    if method != "darts":
        return enas_preset(method, preset)
    overrides = {"paper": {}, "cpu": DARTS_CPU, "tiny": DARTS_TINY}[preset]
    return dataclasses.replace(DARTS_PAPER, **overrides)
