"""Benchmark: SCAS-ENAS child training and controller speed against the matmul peak.

    python experiments/benchmark_enas.py [--method=enas_micro] [--dataset=cifar10] [--steps=30]
        [--num_layers=6] [--filters=20] [--batch_size=128]

Uses the `cpu` preset's search network (or the size the flags set) on random images of the
dataset's shape. Prints the supernet's parameters, child images/s (a fresh architecture per
minibatch, pruning every step) with the achieved GFLOP/s counted on the sampled architectures'
own MACs (x3 for forward + backward, 2 FLOPs per MAC): those of their fixed networks at the
search width, an approximation of what the supernet runs (it keeps the width constant where
the fixed macro network doubles it, and its micro cells add a 1x1 combine over all nodes),
controller updates/s alone (sampling + REINFORCE step) and whole controller steps/s (sampling,
one validation minibatch per architecture, REINFORCE), beside the fp32 matmul peak.
"""
import dataclasses
import tempfile
import time

from absl import app, flags

import scas_tf  # noqa: F401
import numpy as np
import tensorflow as tf

from peak import matmul_gflops, random_splits
from scas_tf import accounting, architectures, configs, data
from scas_tf.search import enas

flags.DEFINE_enum("method", "enas_macro", list(enas.METHODS), "Search method.")
flags.DEFINE_string("dataset", "cifar10", "Dataset whose image shape is used.")
flags.DEFINE_integer("steps", 30, "Timed child steps and controller steps.")
flags.DEFINE_integer("num_layers", None, "Layers of the search network (default: the cpu preset's).")
flags.DEFINE_integer("filters", None, "Filters of the search network (default: the cpu preset's).")
flags.DEFINE_integer("batch_size", None, "Child minibatch size (default: the cpu preset's).")
FLAGS = flags.FLAGS


def timed(fn, repeats):
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def main(_):
    peak = matmul_gflops()
    size = {name: getattr(FLAGS, name) for name in ("num_layers", "filters", "batch_size")
            if getattr(FLAGS, name) is not None}
    config = dataclasses.replace(configs.enas_preset(FLAGS.method, "cpu"), dataset=FLAGS.dataset,
                                 target_sparsity=0.9, pruning_frequency=1, epochs=1, **size)
    splits = random_splits(FLAGS.dataset, config.batch_size * (2 * FLAGS.steps + 10))
    with tempfile.TemporaryDirectory() as run_dir:
        search = enas.EnasSearch(config, splits, run_dir)
        dataset = data.train_dataset(splits.train, splits.info, config.batch_size, 0, 0).repeat()
        iterator = iter(search.strategy.experimental_distribute_dataset(dataset))
        archs, *_ = search.sample(FLAGS.steps)
        everything = tf.constant(0), tf.constant(FLAGS.steps)
        search.child_steps(iterator, archs, *everything)  # trace (the same shapes as the timed call)
        archs, *_ = search.sample(FLAGS.steps)
        seconds = timed(lambda: search.child_steps(iterator, archs, *everything)
                        and search.child_loss.result().numpy(), 1)
        images_per_s = FLAGS.steps * config.batch_size / seconds
        macs = np.mean([accounting.model_cost(architectures.build_model(
            f"{config.method}:{search.arch_from_actions(a).to_text()}", splits.info, config.filters,
            config.num_layers)).summary()["dense_macs"] for a in archs.numpy()[:5]])
        gflops = images_per_s * macs * 6 / 1e9
        params = sum(v.shape.num_elements() for v in search.supernet.trainable_variables)

        def controller_update():
            actions, *_ = search.sample(config.controller_batch)
            search.reinforce.update(actions, tf.random.uniform([config.controller_batch]))

        def controller_step():
            actions, *_ = search.sample(config.controller_batch)
            search.reinforce.update(actions, search.accuracies(iterator, actions))

        controller_update(), controller_step()  # trace
        update_s, step_s = timed(controller_update, FLAGS.steps), timed(controller_step, FLAGS.steps)
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s")
    print(f"{config.method} child ({config.num_layers} layers, {config.filters} filters, batch "
          f"{config.batch_size}, {params / 1e6:.2f}M supernet params, "
          f"{FLAGS.dataset}-shaped, pruning every step): {images_per_s:.0f} images/s, "
          f"{gflops:.1f} GFLOP/s on the sampled architectures' {macs / 1e6:.1f}M MACs = {gflops / peak:.1%} of peak")
    print(f"controller ({config.controller_batch} architectures per step): {1 / update_s:.1f} updates/s "
          f"without rewards, {1 / step_s:.2f} steps/s with one validation minibatch per architecture")


if __name__ == "__main__":
    app.run(main)
