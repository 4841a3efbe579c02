"""Presets: named configurations, as data. Flags given on the command line override them.

Each preset says what it costs on the project's reference machine (2 CPU cores, no GPU) and
what it should reach.
"""
from scas_tf.trainer import TrainConfig

TRAIN_PRESETS = {
    # small_cnn on the embedded mnist_mini (4,500 training images): about a minute on 2 cores;
    # about 97% test accuracy dense, a little less at 90% sparsity.
    "standard": TrainConfig(),
    # End-to-end smoke test: a few seconds on 2 cores; accuracy is meaningless.
    "tiny": TrainConfig(epochs=2, batch_size=32, log_every_steps=10, pruning_end=0.5, validation_fraction=0.2),
}
