"""Presets: named configurations, as data. Flags given on the command line override them.

Each preset says what it costs on the project's reference machine (2 CPU cores, no GPU) and
what it should reach.
"""
import dataclasses

from scas_tf.errors import ScasError
from scas_tf.search.darts import DartsConfig
from scas_tf.search.enas import METHODS as ENAS_METHODS
from scas_tf.search.enas import EnasConfig
from scas_tf.search.smash import SmashConfig
from scas_tf.trainer import TrainConfig

TRAIN_PRESETS = {
    # small_cnn on the embedded mnist_mini (4,500 training images): about a minute on 2 cores;
    # about 98% test accuracy dense or at 90% sparsity. On full MNIST with --epochs=12: 99.25%
    # at 90% sparsity in 8 minutes.
    "standard": TrainConfig(),
    # End-to-end smoke test: a few seconds on 2 cores; accuracy is meaningless.
    "tiny": TrainConfig(epochs=2, batch_size=32, log_every_steps=10, pruning_end=0.5, validation_fraction=0.2),
}

# The reference implementation's settings, script by script (melodyguan/enas):
# * enas_macro: search = scripts/cifar10_macro_search.sh (12 layers, 36 filters, 310 epochs of
#   batch 128, SGDR 0.05 -> 5e-4 with T0=10, Tmul=2, l2 2.5e-4, keep_prob 0.9; controller lr
#   1e-3, tanh 1.5, skip target 0.4 with KL weight 0.8, 50 updates of 20 architectures per
#   epoch, entropy 1e-4, baseline decay 0.99); final = scripts/cifar10_macro_final.sh's
#   training (310 epochs of batch 100, SGDR 0.05 -> 1e-3, l2 2e-4, keep_prob 0.5; no auxiliary
#   head, no drop-path, no cutout). That script trains a 24-layer, 96-filter network of a
#   separately searched 24-layer architecture; here the found 12-layer architecture is trained
#   at the search's 36 filters (doubling at each pool layer): the SCAS paper's Table 1 baseline
#   (2.35M parameters, 395M MACs on CIFAR-10) is the size of such a network, not of the
#   reference's (several times larger); `--final_filters=96` gives the reference's width.
# * enas_micro: search = scripts/cifar10_micro_search.sh (6 layers, 20 filters, 150 epochs of
#   batch 160, SGDR 0.05 -> 5e-4, l2 1e-4, keep_prob 0.9; controller lr 3.5e-3, tanh 1.1,
#   op_tanh_reduce 2.5, 30 updates of 10 architectures per epoch); final =
#   scripts/cifar10_micro_final.sh (15 layers, 36 filters, 630 epochs of batch 144, SGDR
#   0.05 -> 1e-4, l2 2e-4, keep_prob 0.8, auxiliary head 0.4, drop_path_keep_prob 0.6) plus
#   cutout 16, which the ENAS paper's 2.89% needs and the script lacks. The SCAS paper's
#   baseline (2.40M parameters, 163M MACs) is smaller than this network: see the README.
# Days of GPU time on CIFAR-10; not meant for a CPU.
ENAS_MACRO_SCRIPTS = dict(dataset="cifar10", epochs=310, batch_size=128, learning_rate=0.05,
                          min_learning_rate=5e-4, final_epochs=310, final_batch_size=100,
                          final_learning_rate=0.05, final_min_learning_rate=1e-3)
ENAS_PAPER = {
    "enas_macro": EnasConfig(method="enas_macro", **ENAS_MACRO_SCRIPTS),
    "enas_micro": EnasConfig(
        **{**ENAS_MACRO_SCRIPTS, "epochs": 150, "batch_size": 160, "final_epochs": 630, "final_batch_size": 144,
           "final_min_learning_rate": 1e-4},
        method="enas_micro", num_layers=6, filters=20, l2_reg=1e-4,
        controller_learning_rate=3.5e-3, tanh_constant=1.1, op_tanh_reduce=2.5, skip_weight=0.0,
        controller_steps=30, controller_batch=10, final_filters=36, final_num_layers=15, final_dropout=0.2,
        final_auxiliary_weight=0.4, final_drop_path=0.4, final_cutout=16),
}

# A reduced budget for 2 CPU cores on full MNIST (54,000 training images), keeping each
# reference script's structure (SGDR periods of 1 + 2 epochs ending on a restart, the
# controller trained every epoch, L2, dropout; micro's final auxiliary head, drop-path and
# cutout). See the README for the figures and times these reached.
ENAS_CPU = dict(dataset="mnist", num_layers=6, filters=20, epochs=3, lr_restart_epochs=1,
                controller_steps=30, controller_batch=10, num_candidates=50, candidate_batches=4,
                final_epochs=3, final_filters=32, final_batch_size=128, final_learning_rate=0.1,
                learning_rate=0.1, min_learning_rate=1e-3, pruning_begin=0.25, pruning_end=0.75)
ENAS_CPU_MICRO = dict(num_layers=2, filters=12, batch_size=128, final_num_layers=4, final_filters=24,
                      final_drop_path=0.2, final_cutout=8)

# End-to-end smoke test on mnist_mini: well under a minute; results are meaningless.
ENAS_TINY = dict(dataset="mnist_mini", num_layers=3, filters=4, epochs=1, batch_size=64,
                 lr_restart_epochs=0, controller_steps=2, controller_batch=3, num_candidates=4,
                 candidate_batches=1, final_epochs=1, final_filters=4, final_batch_size=64,
                 validation_fraction=0.2, final_validation_fraction=0.2, log_every_steps=20)
ENAS_TINY_MICRO = dict(num_layers=1, final_num_layers=1, final_drop_path=0.2, final_cutout=4)

# The README's first command: a real SCAS search at 90% sparsity on the embedded mnist_mini,
# search + final training in a few minutes on 2 CPU cores (see the README for its figures).
ENAS_QUICK = dict(dataset="mnist_mini", target_sparsity=0.9, num_layers=4, filters=12, epochs=4, batch_size=64,
                  lr_restart_epochs=0, learning_rate=0.05, min_learning_rate=1e-3, controller_steps=10,
                  controller_batch=5, num_candidates=20, candidate_batches=2, final_epochs=6, final_filters=24,
                  final_batch_size=64, final_learning_rate=0.05, pruning_begin=0.2, pruning_end=0.7,
                  log_every_steps=20)


def enas_preset(method, preset):
    """The EnasConfig of a preset (paper, cpu, sweep, quick (macro only) or tiny) for enas_macro
    or enas_micro."""
    paper = ENAS_PAPER[method]
    if preset == "paper":
        return paper
    overrides = {"cpu": ENAS_CPU, "sweep": ENAS_CPU, "quick": ENAS_QUICK, "tiny": ENAS_TINY}[preset]
    if method == "enas_micro":
        overrides = {**overrides, **{"cpu": ENAS_CPU_MICRO, "sweep": ENAS_CPU_MICRO, "tiny": ENAS_TINY_MICRO}[preset]}
    if preset == "sweep":
        overrides = {**overrides, **ENAS_SWEEP, **(ENAS_SWEEP_MICRO if method == "enas_micro" else {})}
    return dataclasses.replace(paper, **overrides)


# The reference's settings (quark0/darts cnn/train_search.py, cnn/train.py; DartsConfig's own
# fields default to them): CIFAR-10, about 4 GPU-days second order; not meant for a CPU.
DARTS_PAPER = DartsConfig(dataset="cifar10", epochs=50, batch_size=64, learning_rate=0.025, min_learning_rate=0.001,
                          validation_fraction=0.5, seed=2, final_epochs=600, final_batch_size=96,
                          final_learning_rate=0.025, final_auxiliary_weight=0.4, final_drop_path=0.2,
                          final_cutout=16)

# A reduced budget for 2 CPU cores on MNIST: search 5 cells of C=8 on 10,000 training images
# (5,000 weights / 5,000 alpha), then train the genotype (6 cells, C=16, auxiliary head) on the
# full training set. See the README for the figures it reached.
DARTS_CPU = dict(dataset="mnist", num_layers=5, filters=8, epochs=4, batch_size=64, search_images=10_000,
                 log_every_steps=25, final_epochs=4, final_filters=16, final_num_layers=6,
                 final_batch_size=96, final_learning_rate=0.05, final_drop_path=0.1, final_cutout=0)

# End-to-end smoke test on mnist_mini: about a minute (mostly tracing); results are meaningless.
DARTS_TINY = dict(dataset="mnist_mini", num_layers=3, filters=2, epochs=1, batch_size=64,
                  search_images=1024, log_every_steps=4, final_epochs=1, final_filters=4,
                  final_num_layers=3, final_batch_size=64, final_validation_fraction=0.2, final_cutout=4)

# The reference's settings (ajbrock/SMASH utils.py train_parser, evaluate.py, train.py; the
# paper's 300 epochs for the resulting network; SmashConfig's own fields default to them):
# CIFAR-100, 100 epochs of HyperNet training at batch 50, 500 + 100 + 100 architectures scored
# on 5,000 validation images. About 1.5 GPU-days; not meant for a CPU.
SMASH_PAPER = SmashConfig(dataset="cifar100", epochs=100, batch_size=50, learning_rate=1e-3, min_learning_rate=0.0,
                          final_epochs=300, final_batch_size=50, final_learning_rate=0.1)

# The reference's structure at a reduced scale (D=6, width 2, N=8, N_max=32: 32/48/48-channel
# block inputs, up to 128 channels) on full MNIST: one epoch of HyperNet training (1,080 steps
# of batch 50), 50 + 10 + 10 architectures scored on 1,000 validation images, two epochs of
# final training at batch 128. See the README for its figures and times.
SMASH_CPU = dict(dataset="mnist", depth=6, width=2, N=8, N_max=32, epochs=1, num_random=50, num_perturbed=10,
                 num_markov=10, score_images=1000, final_epochs=2, final_batch_size=128, pruning_begin=0.25,
                 pruning_end=0.75)

# End-to-end smoke test on mnist_mini (the notes' "tiny" scale): results are meaningless.
SMASH_TINY = dict(dataset="mnist_mini", depth=4, width=2, N=4, N_max=16, max_groups=4, max_kernel=5, epochs=1,
                  batch_size=64, num_random=4, num_perturbed=2, num_markov=2, score_images=64,
                  score_batch_size=32, final_epochs=1, final_batch_size=32, validation_fraction=0.2,
                  final_validation_fraction=0.2, log_every_steps=20)

# `sweep`: one target of a sweep (search + final training) in about 10-15 minutes on 2 CPU
# cores on full MNIST, for the paper's sweeps over target sparsity (experiments/
# reproduce_table1.sh). Each is its method's `cpu` preset searching on a subset of the training
# set (--search_images) and training the found network for two epochs on all of it (pruning
# ends 60-75% of the way in, leaving at least half an epoch to recover); what else shrinks is
# beside each.
# See the README for the measured cost of each.
ENAS_SWEEP = dict(search_images=12_000, final_epochs=2, final_filters=16)  # final width 32 -> 16
ENAS_SWEEP_MICRO = dict(search_images=4_000, final_num_layers=2, final_filters=12)  # final 4 x 24 -> 2 x 12
# 2 search epochs on 2,500 images (instead of 4 on 10,000); final 4 cells of C=12 (instead of 6 of 16).
DARTS_SWEEP = dict(search_images=2_500, epochs=2, final_epochs=2, final_filters=12, final_num_layers=4)
# Banks and ops at half the cpu preset's width (N 8 -> 4, N_max 32 -> 16); 30 architectures
# scored on 500 validation images instead of 70 on 1,000.
SMASH_SWEEP = dict(search_images=20_000, N=4, N_max=16, num_random=20, num_perturbed=5, num_markov=5,
                   score_images=500, final_epochs=2)

SEARCH_PRESETS = ("paper", "cpu", "sweep", "quick", "tiny")
QUICK_METHOD = "enas_macro"
SEARCH_METHODS = (*ENAS_METHODS, "darts", "smash")


def config_class(method=None):
    """The config dataclass of a search method, or TrainConfig's (method None: `scas train`)."""
    if method is None:
        return TrainConfig
    return EnasConfig if method in ENAS_METHODS else {"darts": DartsConfig, "smash": SmashConfig}[method]


def search_preset(method, preset):
    """The config of a search preset (paper, cpu, sweep, quick or tiny) for a search method."""
    if method not in SEARCH_METHODS:
        raise ScasError(f"unknown method {method!r}; choose one of {', '.join(SEARCH_METHODS)}")
    if preset not in SEARCH_PRESETS:
        raise ScasError(f"unknown search preset {preset!r}; choose one of {', '.join(SEARCH_PRESETS)}")
    if preset == "quick" and method != QUICK_METHOD:
        raise ScasError(f"the quick preset is for --method={QUICK_METHOD}; use --preset=tiny or cpu for {method}")
    if method in ENAS_METHODS:
        return enas_preset(method, preset)
    paper, cpu, sweep, tiny = ((DARTS_PAPER, DARTS_CPU, DARTS_SWEEP, DARTS_TINY) if method == "darts" else
                               (SMASH_PAPER, SMASH_CPU, SMASH_SWEEP, SMASH_TINY))
    return dataclasses.replace(paper, **{"paper": {}, "cpu": cpu, "sweep": {**cpu, **sweep}, "tiny": tiny}[preset])
