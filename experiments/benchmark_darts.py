"""Benchmark: SCAS-DARTS search steps at the reference's search configuration.

    python experiments/benchmark_darts.py [--steps=5] [--num_layers=8] [--filters=16] [--kept_cells=3]
        [--alpha_kept_cells=5]

Runs first-order and second-order (unrolled) search steps, each in its own process so that
each peak memory is its own: 8 cells, C=16, batch 64 (as quark0/darts train_search.py) on
random CIFAR-10-shaped images, pruning to 0.9 with a mask update every step. Prints seconds and
steps per second, images/s (each step reads a training and a validation minibatch), the
process's peak resident memory (over the one-off trace and compile, and over the steps alone,
with the TensorFlow tensors' share), the trace-and-compile time, and achieved GFLOP/s beside
the machine's fp32 matmul peak measured in the same process. FLOPs are counted on the search
network's dense MACs (every mixed op's every candidate): 2 FLOPs per MAC, a forward and
backward pass counted as 3 forwards (the model's FLOPs: the search network's recomputation of
the cells before the last --kept_cells, or --alpha_kept_cells in passes w.r.t. alpha alone, in
the backward pass is not counted); a first-order step
makes 2 such passes (weights, alpha), a second-order step 5 (weights, virtual step, validation,
and the two Hessian passes).
"""
import ctypes
import dataclasses
import os
import subprocess
import sys
import tempfile
import time

# TensorFlow counts the CPU allocator's peak (the tensors' share below) only with its BFC
# allocator on CPU; set before TensorFlow starts.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

from absl import app, flags

import scas_tf  # noqa: F401
import tensorflow as tf

from peak import matmul_gflops, random_splits
from scas_tf import accounting, configs
from scas_tf.search import darts

flags.DEFINE_integer("steps", 5, "Timed search steps.")
flags.DEFINE_integer("num_layers", 8, "Cells of the search network.")
flags.DEFINE_integer("filters", 16, "Initial channels of the search network.")
flags.DEFINE_integer("batch_size", 64, "Minibatch size.")
flags.DEFINE_integer("kept_cells", darts.DartsConfig.kept_cells, "Cells at the network's end that keep "
                     "their activations for the backward pass (the others recompute theirs).")
flags.DEFINE_integer("alpha_kept_cells", darts.DartsConfig.alpha_kept_cells, "kept_cells of the passes "
                     "w.r.t. alpha alone.")
flags.DEFINE_enum("order", None, ["first", "second"], "Run one order in this process (the "
                  "default runs both, each in a child process).")
FLAGS = flags.FLAGS
PASSES = {"first": 2, "second": 5}


def peak_memory_gib():
    """The process's peak resident memory since start or the last reset (Linux VmHWM)."""
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return kib / 2 ** 20


def reset_peak_memory():
    """Returns the heap the one-off trace and compile freed to the OS (glibc keeps it otherwise),
    then restarts the peak, so that the next peak is the stepping's own."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure(order):
    config = dataclasses.replace(
        configs.DARTS_PAPER, dataset="cifar10", num_layers=FLAGS.num_layers, filters=FLAGS.filters,
        batch_size=FLAGS.batch_size, kept_cells=FLAGS.kept_cells,
        alpha_kept_cells=FLAGS.alpha_kept_cells, unrolled=order == "second",
        target_sparsity=0.9, pruning_begin=0.0, pruning_end=0.5, pruning_frequency=1, epochs=1)
    splits = random_splits("cifar10", config.batch_size * (FLAGS.steps + 2))
    peak = matmul_gflops()
    with tempfile.TemporaryDirectory() as run_dir:
        search = darts.DartsSearch(config, splits, run_dir)
        train, valid = search.streams(0, 0)
        started = time.perf_counter()
        search.search_steps(train, valid, tf.constant(1))
        search.train_loss.result().numpy()
        compile_seconds = time.perf_counter() - started
        compile_peak = peak_memory_gib()
        reset_peak_memory()
        started = time.perf_counter()
        search.search_steps(train, valid, tf.constant(FLAGS.steps))
        search.train_loss.result().numpy()
        seconds = (time.perf_counter() - started) / FLAGS.steps
        macs = accounting.model_cost(search.network).summary()["dense_macs"]
    gflops = PASSES[order] * 3 * 2 * macs * config.batch_size / seconds / 1e9
    steps_peak = peak_memory_gib()
    tensors_peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2 ** 30
    print(f"{order}-order: {seconds:.2f} s/step = {1 / seconds:.3f} steps/s, "
          f"{2 * config.batch_size / seconds:.0f} images/s (training + validation); peak memory "
          f"{max(compile_peak, steps_peak):.2f} GiB ({compile_peak:.2f} GiB while tracing and compiling, "
          f"{compile_seconds:.0f} s; {steps_peak:.2f} GiB while stepping, of which tensors {tensors_peak:.2f} GiB); "
          f"{gflops:.1f} GFLOP/s on {macs / 1e6:.0f}M MACs/image = {gflops / peak:.1%} of the "
          f"{peak:.0f} GFLOP/s matmul peak")


def main(_):
    if FLAGS.order:
        measure(FLAGS.order)
        return
    print(f"DARTS search network: {FLAGS.num_layers} cells, C={FLAGS.filters}, batch {FLAGS.batch_size}, "
          f"32x32x3, 10 classes, pruning to 0.9 every step, the last {FLAGS.kept_cells} cells' activations kept "
          f"({FLAGS.alpha_kept_cells} in passes w.r.t. alpha alone)")
    names = ("steps", "num_layers", "filters", "batch_size", "kept_cells", "alpha_kept_cells")
    for order in PASSES:
        args = [f"--{name}={getattr(FLAGS, name)}" for name in names]
        subprocess.run([sys.executable, __file__, f"--order={order}", *args], check=True)


if __name__ == "__main__":
    app.run(main)
