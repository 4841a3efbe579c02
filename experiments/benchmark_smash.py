"""Benchmark: SCAS-SMASH's HyperNet training step and scoring against the machine's matmul peak
and against training the same architecture as a plain (traced) Keras model.

    python experiments/benchmark_smash.py [--preset=cpu] [--steps=10] [--target_sparsity=0.9]

For a few sampled architectures, prints the search network's training steps/s, images/s and
achieved GFLOP/s on that architecture (forward + backward = 3x the forward MACs, 2 FLOPs per
MAC; the HyperNet's own few MFLOPs left out), next to the same architecture built as a plain
Keras model (the search network's op: `sandwich=False`) trained by the foundation trainer
in a traced loop, and the fp32 matmul peak measured in the same process; then the search's
steps/s with a fresh architecture per step (as it runs) and the seconds to score one
architecture. Random images of the dataset's shape: throughput does not depend on pixels.
"""
import dataclasses
import tempfile
import time

from absl import app, flags

import scas_tf  # noqa: F401
import numpy as np
import tensorflow as tf

from peak import matmul_gflops, random_splits
from scas_tf import accounting, configs, data, trainer
from scas_tf.models.smash import build_smash_model
from scas_tf.search import smash

flags.DEFINE_string("preset", "cpu", "SMASH search preset whose scale and batch size are timed.")
flags.DEFINE_integer("steps", 10, "Timed training steps per measurement (after warm-up).")
flags.DEFINE_float("target_sparsity", 0.9, "Pruning target (reached at once: every step prunes to it).")
flags.DEFINE_integer("architectures", 3, "Architectures timed one by one, and scored for the scoring time.")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square fp32 matmul used for the peak.")
FLAGS = flags.FLAGS
WARMUP = 2


def timed(run, steps):
    run(WARMUP)
    started = time.perf_counter()
    run(steps)
    return (time.perf_counter() - started) / steps


def fixed_network_step(arch, splits, config, steps):
    """Seconds per step of `arch` as a plain Keras model in the trainer's traced loop."""
    train_config = trainer.TrainConfig(dataset=config.dataset, batch_size=config.batch_size, epochs=1,
                                       target_sparsity=config.target_sparsity, pruning_begin=0.0,
                                       pruning_end=0.001, pruning_frequency=1)
    with tempfile.TemporaryDirectory() as run_dir:
        t = trainer.Trainer(lambda: build_smash_model(arch, splits.info, sandwich=False), splits, train_config, run_dir)
        iterator = iter(data.train_dataset(splits.train, splits.info, config.batch_size, seed=0, epoch=0).repeat())

        def run(count):
            t.train_steps(iterator, tf.constant(count))
            t.train_loss.result().numpy()
        return timed(run, steps)


def main(_):
    peak = matmul_gflops(FLAGS.matmul_size)
    print(f"fp32 matmul peak ({FLAGS.matmul_size}^3): {peak:.1f} GFLOP/s; "
          f"threads: {tf.config.threading.get_intra_op_parallelism_threads() or 'all'}")
    config = dataclasses.replace(configs.search_preset("smash", FLAGS.preset), target_sparsity=FLAGS.target_sparsity,
                                 pruning_begin=0.0, pruning_end=0.001, epochs=1)
    splits = random_splits(config.dataset, config.batch_size * 20)
    batch = config.batch_size
    with tempfile.TemporaryDirectory() as run_dir:
        search = smash.SmashSearch(config, splits, run_dir)
        iterator = iter(data.train_dataset(splits.train, splits.info, batch, seed=0, epoch=0).repeat())
        ratios = []
        for index in range(FLAGS.architectures):
            arch = search.sample(search.total_steps, smash.SCORING, index)
            macs = accounting.model_cost(build_smash_model(arch, splits.info, sandwich=False)).summary()["dense_macs"]
            flops = macs * batch * 3 * 2 / 1e9
            search_step = timed(lambda n: [search.train_architecture(arch, *next(iterator)) for _ in range(n)],
                                FLAGS.steps)
            fixed_step = fixed_network_step(arch, splits, config, FLAGS.steps)
            ratios.append(search_step / fixed_step)
            print(f"architecture {index} ({arch.num_ops()} ops, {macs / 1e6:.1f}M MACs/image, batch {batch}): "
                  f"search network {1 / search_step:.2f} steps/s, {batch / search_step:.0f} images/s, "
                  f"{flops / search_step:.1f} GFLOP/s = {flops / search_step / peak:.1%} of peak; fixed Keras "
                  f"model {1 / fixed_step:.2f} steps/s, {flops / fixed_step:.1f} GFLOP/s = "
                  f"{flops / fixed_step / peak:.1%} of peak; ratio {search_step / fixed_step:.2f}x")
        print(f"search step / fixed-network step: {np.mean(ratios):.2f}x on average")

        fresh = timed(lambda n: [search.train_step(*next(iterator)) for _ in range(n)], FLAGS.steps)
        print(f"search with a fresh architecture per step: {1 / fresh:.2f} steps/s, {batch / fresh:.0f} images/s")

        batches = search.score_batches()
        started = time.perf_counter()
        for index in range(FLAGS.architectures):
            search.error(search.sample(search.total_steps, smash.SCORING, 100 + index), index, batches)
        print(f"scoring: {(time.perf_counter() - started) / FLAGS.architectures:.2f} s per architecture on "
              f"{min(config.score_images, len(splits.validation))} images")


if __name__ == "__main__":
    app.run(main)
