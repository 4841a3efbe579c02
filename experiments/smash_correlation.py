"""Does the SMASH ranking mean something? Spearman correlation between SMASH scores and short
from-scratch trainings of architectures spread over the score range.

    python experiments/smash_correlation.py --run_dir=runs/smash-mnist-s0.9 --architectures=10 \\
        --epochs=1 --train_images=10000 --data_dir=../shared/data

Reads a finished `scas search --method=smash` run: its config and `candidates.json` (every
scored architecture with the validation error of its pruned generated weights). Picks
`--architectures` of them at evenly spaced ranks from best to worst, trains each from scratch
with the run's final-training settings (same sparsity target) for `--epochs` on a seeded
subset of `--train_images` training images (all of them by default), each in
<run_dir>/correlation/<epochs>ep-<images>img/<rank>/ (a rerun resumes), and writes <run_dir>/correlation.json: the
pairs and Spearman's rho between SMASH error and from-scratch validation error.
"""
import dataclasses
import json
from pathlib import Path

from absl import app, flags

import scas_tf  # noqa: F401
import numpy as np

from scas_tf import architectures, data, trainer
from scas_tf.run_dir import read_json, write_json_atomic
from scas_tf.search.smash import SmashConfig

flags.DEFINE_string("run_dir", None, "A finished SMASH search's run folder.", required=True)
flags.DEFINE_integer("architectures", 10, "Architectures trained from scratch, spread over the ranks.")
flags.DEFINE_integer("epochs", 1, "Epochs of each from-scratch training.")
flags.DEFINE_integer("train_images", None, "Train on a seeded subset of this many training images.")
flags.DEFINE_string("data_dir", None, "Folder with the datasets' original files.")
FLAGS = flags.FLAGS


def ranks(values):
    """Ranks from 1, ties sharing their average rank."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    result = np.empty(len(values))
    result[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        result[tied] = result[tied].mean()
    return result


def spearman(a, b):
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def spread(candidates, count):
    """`count` candidates at evenly spaced ranks, best and worst included."""
    picks = np.unique(np.round(np.linspace(0, len(candidates) - 1, count)).astype(int))
    return [(int(rank), candidates[rank]) for rank in picks]


def subsample(split, count, seed):
    """A seeded subset of `count` images of `split`, in the split's order."""
    if count is None or count >= len(split):
        return split
    keep = np.sort(np.random.default_rng(seed).permutation(len(split))[:count])
    return dataclasses.replace(split, images=split.images[keep], labels=split.labels[keep])


def main(_):
    run = Path(FLAGS.run_dir)
    config = SmashConfig(**read_json(run / "config.json"))
    candidates = read_json(run / "candidates.json")
    splits = data.load_splits(config.dataset, FLAGS.data_dir, config.final_validation_fraction, config.seed)
    splits.train = subsample(splits.train, FLAGS.train_images, config.seed)
    study = run / "correlation" / f"{FLAGS.epochs}ep-{len(splits.train)}img"
    pairs = []
    for rank, candidate in spread(candidates, FLAGS.architectures):
        train_config = dataclasses.replace(config.final_train_config(f"smash:{candidate['architecture']}"),
                                           epochs=FLAGS.epochs)
        results = trainer.train(architectures.model_builder(train_config, splits.info), splits, train_config,
                                study / str(rank))
        pairs.append({"rank": rank, "stage": candidate["stage"], "smash_error": candidate["validation_error"],
                      "scratch_validation_error": 1.0 - results["validation_accuracy"],
                      "scratch_test_error": 1.0 - results["test_accuracy"], "params": results["params"],
                      "architecture": candidate["architecture"]})
        print(json.dumps({k: v for k, v in pairs[-1].items() if k != "architecture"}))
    rho = spearman([p["smash_error"] for p in pairs], [p["scratch_validation_error"] for p in pairs])
    write_json_atomic(run / "correlation.json", {"epochs": FLAGS.epochs, "train_images": len(splits.train),
                                                 "spearman": rho, "pairs": pairs})
    print(f"Spearman rho between SMASH error and {FLAGS.epochs}-epoch from-scratch validation error over "
          f"{len(pairs)} architectures: {rho:.3f}")


if __name__ == "__main__":
    app.run(main)
