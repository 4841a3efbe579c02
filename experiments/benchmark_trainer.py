"""Benchmark: trainer throughput on a CIFAR-sized model against the machine's matmul peak.

    python experiments/benchmark_trainer.py [--arch=resnet20] [--steps=30] [--batch_size=128]

Prints images/s and achieved GFLOP/s of the training step (forward + backward counted as
3x the forward pass, 2 FLOPs per MAC, dense MACs) next to the fp32 matmul GFLOP/s measured in
the same process, so that the ratio is comparable across (noisy, shared) machines. Random
CIFAR-shaped images are used: throughput does not depend on pixel values.
"""
import tempfile
import time

from absl import app, flags

import scas_tf  # noqa: F401
import tensorflow as tf

from peak import matmul_gflops, random_splits
from scas_tf import accounting, data, trainer
from scas_tf.models import build_baseline

flags.DEFINE_string("arch", "resnet20", "Baseline architecture to time.")
flags.DEFINE_integer("steps", 30, "Timed training steps (after warm-up).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square fp32 matmul used for the peak.")
FLAGS = flags.FLAGS


def time_training(arch, target_sparsity, steps, batch_size):
    config = trainer.TrainConfig(arch=arch, dataset="cifar10", batch_size=batch_size,
                                 epochs=1, target_sparsity=target_sparsity, pruning_frequency=1)
    splits = random_splits("cifar10", batch_size * (steps + 5))
    with tempfile.TemporaryDirectory() as run_dir:
        t = trainer.Trainer(lambda: build_baseline(arch, splits.info), splits, config, run_dir)
        dataset = data.train_dataset(splits.train, splits.info, batch_size, seed=0, epoch=0)
        iterator = iter(t.strategy.experimental_distribute_dataset(dataset))
        t.train_steps(iterator, tf.constant(5))  # trace and warm up
        started = time.perf_counter()
        t.train_steps(iterator, tf.constant(steps))
        _ = t.train_loss.result().numpy()
        seconds = time.perf_counter() - started
        assert t.step == steps + 5, f"ran {t.step} steps, expected {steps + 5}"
        macs = accounting.model_cost(t.model).summary()["dense_macs"]
    return steps * batch_size / seconds, macs


def main(_):
    peak = matmul_gflops(FLAGS.matmul_size)
    print(f"fp32 matmul peak ({FLAGS.matmul_size}^3): {peak:.1f} GFLOP/s; "
          f"threads: {tf.config.threading.get_intra_op_parallelism_threads() or 'all'}")
    for sparsity in (0.0, 0.9):
        images_per_s, macs = time_training(FLAGS.arch, sparsity, FLAGS.steps, FLAGS.batch_size)
        gflops = images_per_s * macs * 2 * 3 / 1e9
        print(f"{FLAGS.arch} batch {FLAGS.batch_size}, pruning to {sparsity:.1f} every step: "
              f"{images_per_s:.0f} images/s, {gflops:.1f} GFLOP/s = {gflops / peak:.1%} of matmul peak "
              f"({macs / 1e6:.1f}M MACs/image)")


if __name__ == "__main__":
    app.run(main)
