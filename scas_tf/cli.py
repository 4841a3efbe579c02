"""The `scas` command line.

    scas train --dataset=mnist_mini --target_sparsity=0.9 --output_dir=runs/quickstart
    scas search --method=enas_micro --preset=cpu --target_sparsity=0.9 --dataset=mnist
    scas search --method=darts --unrolled --preset=cpu --target_sparsity=0.9
    scas search --method=smash --preset=cpu --target_sparsity=0.9
    scas train --arch_file=runs/search/architecture.txt --target_sparsity=0.9
    scas sweep --method=smash --preset=cpu --targets=0,0.5,0.9 --output_dir=sweeps/smash-mnist
    scas report sweeps/smash-mnist sweeps/darts-mnist --output=reports/mnist
    scas export runs/enas_macro-mnist-s0.9 --quantize=dynamic --nosparse

Flags left out take their value from --preset; every field of TrainConfig, EnasConfig, DartsConfig and SmashConfig
is a flag. Errors in the user's input are reported as one line (`scas: error: ...`), exit status 2.
"""
import dataclasses
import shlex
import sys
from pathlib import Path

from absl import app, flags

import scas_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from scas_tf import architectures, configs, console, data, distribute, litert, report, sweep, trainer
from scas_tf.errors import ScasError
from scas_tf.run_dir import held, write_text_atomic
from scas_tf.search import darts, enas, smash

FLAG_TYPES = {int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_bool,
              str: flags.DEFINE_string}
# What each config's fields are flags of (in help texts).
CONFIGS = {"train": trainer.TrainConfig, "search (ENAS)": enas.EnasConfig, "search (DARTS)": darts.DartsConfig,
           "search (SMASH)": smash.SmashConfig}
SEARCHES = {"enas_macro": enas.run_search, "enas_micro": enas.run_search, "darts": darts.run_search,
            "smash": smash.run_search}


def define_config_flags():
    """One flag per config field, default None so that an absent flag keeps the preset's value;
    a field several configs have gets one flag whose help tells each meaning apart."""
    helps, types = {}, {}
    for user, config_class in CONFIGS.items():
        for field in dataclasses.fields(config_class):
            helps.setdefault(field.name, {})[user] = field.metadata["help"]
            types[field.name] = field.type
    for name, by_command in helps.items():
        texts = set(by_command.values())
        text = texts.pop() if len(texts) == 1 else "; ".join(f"{c}: {h.rstrip('.')}" for c, h in by_command.items()) + "."
        FLAG_TYPES[types[name]](name, None, text)


define_config_flags()
flags.DEFINE_string("preset", None, "Preset the other flags override: train: "
                    f"{'|'.join(configs.TRAIN_PRESETS)} (default standard); search: "
                    f"{'|'.join(configs.SEARCH_PRESETS)} (default cpu).")
flags.DEFINE_string("arch_file", None, "train: an architecture file written by `scas search`.")
flags.DEFINE_string("output_dir", None, "Run folder; re-running with the same folder resumes. "
                    "Default: runs/<arch or method>-<dataset>-s<target_sparsity>.")
flags.DEFINE_string("data_dir", None, "Folder with the datasets' original files (MNIST idx, CIFAR "
                    "python pickles); default $SCAS_DATA_DIR. tensorflow_datasets is tried next.")
flags.DEFINE_bool("allow_partial_data", False, "Use a --data_dir copy that lacks part of the official "
                  "dataset (e.g. CIFAR-10 training batches); the run records its data as partial.")
flags.DEFINE_bool("tfds_download", False, "Let tensorflow_datasets download a dataset it lacks.")
flags.DEFINE_string("targets", "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
                    "sweep: comma-separated target sparsities, one search each (the paper's ten by default).")
flags.DEFINE_string("output", None, "report: folder for Table 1, Figure 4, the Pareto plots and report.md.")
flags.DEFINE_enum("format", "litert", ["litert"], "export: the deployment format.")
flags.DEFINE_enum("quantize", "none", list(litert.QUANTIZATIONS),
                  "export: none (float), dynamic (int8 weights) or int8 (weights and activations, "
                  "calibrated on training images).")
flags.DEFINE_bool("sparse", True, "export: store weights in LiteRT's sparse encoding.")
flags.DEFINE_enum("strategy", "auto", list(distribute.STRATEGIES),
                  "tf.distribute strategy: auto picks a TPU, several GPUs, or the default device.")
FLAGS = flags.FLAGS


def preset_config(command):
    if command == "train":
        name = FLAGS.preset or "standard"
        if name not in configs.TRAIN_PRESETS:
            raise ScasError(f"unknown train preset {name!r}; choose one of {', '.join(configs.TRAIN_PRESETS)}")
        return configs.TRAIN_PRESETS[name]
    return configs.search_preset(FLAGS.method or "enas_macro", FLAGS.preset or "cpu")


def config_from_flags(command):
    """The command's preset with every flag given on the command line applied."""
    preset = preset_config(command)
    fields = {f.name for f in dataclasses.fields(preset)}
    foreign = sorted({name for config_class in CONFIGS.values() for name in
                      (f.name for f in dataclasses.fields(config_class))
                      if name not in fields and FLAGS[name].present})
    if foreign:
        what = command if command == "train" else f"{command} --method={preset.method}"
        raise ScasError(f"--{foreign[0]} does not apply to `scas {what}`")
    overrides = {name: FLAGS[name].value for name in fields if FLAGS[name].present}
    if command == "train" and FLAGS.arch_file:
        overrides["arch"] = architectures.read_arch_file(FLAGS.arch_file)
    return dataclasses.replace(preset, **overrides)


def output_dir(name, config):
    return Path(FLAGS.output_dir or Path("runs") / f"{name}-{config.dataset}-s{config.target_sparsity:g}")


def sweep_dir(config):
    return Path(FLAGS.output_dir or Path("sweeps") / f"{config.method}-{config.dataset}")


def load_splits(config, validation_fraction=None):
    return data.load_splits(config.dataset, FLAGS.data_dir, validation_fraction or config.validation_fraction,
                            config.seed, FLAGS.tfds_download, allow_partial_data=FLAGS.allow_partial_data)


def record_command(folder):
    """Adds this command line to folder/commands.txt (once), which `scas report` lists."""
    line = "scas " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    path = Path(folder) / "commands.txt"
    previous = path.read_text() if path.exists() else ""
    if line not in previous.splitlines():
        write_text_atomic(path, previous + line + "\n")


def summary_line(results, what):
    return (f"{what}: test accuracy {results['test_accuracy']:.4f}, params {results['params']:,} "
            f"({results['nonzero_params']:,} non-zero), MACs {results['dense_macs']:,} dense / "
            f"{results['sparse_macs']:,} sparse{chance_note(results)}")


def chance_note(results):
    """A warning for a network that classifies no better than guessing (which trains without
    a non-finite loss, e.g. at a learning rate just short of diverging)."""
    classes = data.dataset_info(results["config"]["dataset"]).num_classes
    if results["test_accuracy"] >= 1.5 / classes:
        return ""
    return f" -- at chance level (1/{classes}): the network did not learn; try a lower --learning_rate"


def train_command(config):
    space, _ = architectures.parse(config.arch)
    name = space or config.arch
    folder = output_dir(name, config)
    strategy = distribute.make_strategy(FLAGS.strategy)
    splits = load_splits(config)
    with held(folder):
        record_command(folder)
        results = trainer.train(architectures.model_builder(config, splits.info), splits, config, folder, strategy)
    print(summary_line(results, f"{name} on {config.dataset} at target sparsity {config.target_sparsity:g}")
          + f"; results in {folder / 'results.json'}")


def searcher():
    """run(config, folder): the config's searcher on the flags' data and strategy."""
    strategy = distribute.make_strategy(FLAGS.strategy)
    return lambda run_config, folder: SEARCHES[run_config.method](
        run_config, lambda fraction: load_splits(run_config, fraction), folder, strategy)


def search_command(config):
    folder = output_dir(config.method, config)
    with held(folder):
        record_command(folder)
        results = searcher()(config, folder)
    print(f"{config.method} found {results['architecture']}")
    print(f"next: tensorboard --logdir={folder}; {folder} holds architecture.txt, results.json and "
          f"{results['final_dir']}/saved_model")
    print(summary_line(results["final"], f"trained from scratch at target sparsity {config.target_sparsity:g}")
          + f"; results in {folder / 'results.json'}")


def sweep_command(config):
    if FLAGS["target_sparsity"].present:
        raise ScasError("`scas sweep` takes --targets, not --target_sparsity")
    folder = sweep_dir(config)
    targets = sweep.parse_targets(FLAGS.targets)
    sweep.claim_sweep(config, folder)
    record_command(folder)
    outcome = sweep.run_sweep(config, targets, folder, searcher())
    for target, (status, results) in outcome.items():
        print(f"target {target:g}: " + (summary_line(results["final"], status) if status != "busy" else results))
    done = sum(status != "busy" for status, _ in outcome.values())
    print(f"sweep {folder}: {done} of {len(outcome)} targets finished; tables and figures: "
          f"scas report {folder} --output={folder / 'report'}")


def report_command(folders):
    if not folders:
        raise ScasError("`scas report` needs one or more sweep or run folders")
    output = Path(FLAGS.output or "report")
    report.write_report([Path(f) for f in folders], output)
    print(f"report of {len(folders)} folder(s): {output / 'report.md'}")


def export_command(folders):
    if len(folders) != 1:
        raise ScasError(f"`scas export` takes one run folder, got {len(folders)}")
    folder = Path(folders[0])
    wanted = litert.Variant(FLAGS.quantize, FLAGS.sparse)
    summary = litert.export_run(folder, lambda config: load_splits(trainer.TrainConfig(**config)), wanted)
    print(f"{folder / 'export' / 'model.tflite'}: {wanted.name}, " + export_line(summary["variants"][wanted.name]))
    print(f"every variant, measured in this run: {folder / 'export' / 'export.json'}")


def export_line(figures):
    line = (f"{figures['bytes'] / 1024:,.0f} KiB, weight sparsity {figures['weight_sparsity']:.3f}, "
            f"test accuracy {figures.get('test_accuracy', float('nan')):.4f}")
    for runtime, timings in figures["runtimes"].items():
        line += f"; {runtime}: " + (timings["error"] if "error" in timings else ", ".join(
            f"{t['median_ms']:.2f} ms ({threads.replace('_', ' ')})" for threads, t in timings.items()))
    return line


FOLDER_COMMANDS = {"report": report_command, "export": export_command}
COMMANDS = {"train": train_command, "search": search_command, "sweep": sweep_command}


def main(argv):
    commands = [*COMMANDS, *FOLDER_COMMANDS]
    if len(argv) < 2 or argv[1] not in commands or (argv[1] in COMMANDS and len(argv) != 2):
        raise app.UsageError(f"expected one command, one of: {', '.join(commands)}; got {argv[1:]}")
    console.quiet_libraries(FLAGS.verbosity >= 1)
    try:
        if argv[1] in FOLDER_COMMANDS:
            FOLDER_COMMANDS[argv[1]](argv[2:])
        else:
            COMMANDS[argv[1]](config_from_flags(argv[1]))
    except (ScasError, OSError) as e:  # OSError: e.g. an output_dir that cannot be written
        print(f"scas: error: {e}", file=sys.stderr)
        sys.exit(2)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
