"""The `scas` command line.

    scas train --dataset=mnist_mini --target_sparsity=0.9 --output_dir=runs/quickstart

Flags left out take their value from --preset; every TrainConfig field is a flag. Errors in
the user's input are reported as one line (`scas: error: ...`) with exit status 2.
"""
import dataclasses
import logging
import sys
from pathlib import Path

from absl import app, flags

import scas_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from scas_tf import configs, data, distribute, trainer
from scas_tf.errors import ScasError
from scas_tf.models import ARCHITECTURES, build_baseline

COMMANDS = ("train",)
FLAG_TYPES = {int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_bool,
              str: flags.DEFINE_string}


def define_config_flags(config_class):
    """One flag per config field, default None so that an absent flag keeps the preset's value."""
    for field in dataclasses.fields(config_class):
        FLAG_TYPES[field.type](field.name, None, f"{field.metadata['help']} (preset: {field.default!r})")


define_config_flags(trainer.TrainConfig)
flags.DEFINE_enum("preset", "standard", list(configs.TRAIN_PRESETS), "Preset the other flags override.")
flags.DEFINE_string("output_dir", None, "Run folder; re-running with the same folder resumes. "
                    "Default: runs/<arch>-<dataset>-s<target_sparsity>.")
flags.DEFINE_string("data_dir", None, "Folder with the datasets' original files (MNIST idx, CIFAR "
                    "python pickles); default $SCAS_DATA_DIR. tensorflow_datasets is tried next.")
flags.DEFINE_bool("tfds_download", False, "Let tensorflow_datasets download a dataset it lacks.")
flags.DEFINE_enum("strategy", "auto", list(distribute.STRATEGIES),
                  "tf.distribute strategy: auto picks a TPU, several GPUs, or the default device.")
FLAGS = flags.FLAGS


def config_from_flags():
    preset = configs.TRAIN_PRESETS[FLAGS.preset]
    overrides = {f.name: FLAGS[f.name].value for f in dataclasses.fields(preset)
                 if FLAGS[f.name].value is not None}
    return dataclasses.replace(preset, **overrides)


def default_output_dir(config):
    return Path("runs") / f"{config.arch}-{config.dataset}-s{config.target_sparsity:g}"


def train_command(config):
    if config.arch not in ARCHITECTURES:
        raise ScasError(f"unknown architecture {config.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    output_dir = Path(FLAGS.output_dir or default_output_dir(config))
    strategy = distribute.make_strategy(FLAGS.strategy)
    splits = data.load_splits(config.dataset, FLAGS.data_dir, config.validation_fraction,
                              config.seed, FLAGS.tfds_download)
    results = trainer.train(lambda: build_baseline(config.arch, splits.info), splits, config,
                            output_dir, strategy)
    print(f"{config.arch} on {config.dataset} at target sparsity {config.target_sparsity:g}: "
          f"test accuracy {results['test_accuracy']:.4f}, params {results['params']:,} "
          f"({results['nonzero_params']:,} non-zero), MACs {results['dense_macs']:,} dense / "
          f"{results['sparse_macs']:,} sparse; results in {output_dir / 'results.json'}")


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"expected one command, one of: {', '.join(COMMANDS)}; got {argv[1:]}")
    logging.getLogger("scas").setLevel(logging.INFO)
    try:
        train_command(config_from_flags())
    except (ScasError, OSError) as e:  # OSError: e.g. an output_dir that cannot be written
        print(f"scas: error: {e}", file=sys.stderr)
        sys.exit(2)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
