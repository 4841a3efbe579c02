"""SCAS-SMASH: the memory-bank space, the HyperNet's weights and their pruning, the search
network against the fixed one, and a tiny search through the CLI that resumes mid-scoring."""
import dataclasses
import json
import re
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from scas_tf import architectures, configs, data, pruning
from scas_tf.errors import ScasError
from scas_tf.models import smash as models
from scas_tf.search import smash as search_lib
from scas_tf.spaces import smash as space_lib

SCAS = [sys.executable, "-m", "scas_tf"]
TINY = configs.search_preset("smash", "tiny")
TINY_SPACE = TINY.space()
INFO = data.dataset_info("mnist_mini")


def arch_with_ops(seed=0, min_groups=2):
    """A tiny-space architecture with a grouped and a dilated op somewhere."""
    rng = np.random.default_rng(seed)
    while True:
        arch = space_lib.sample(TINY_SPACE, rng)
        ops = [op for block in arch.blocks for op in block.ops]
        if any(op.groups >= min_groups for op in ops) and any(max(op.dilation) > 1 for op in ops):
            return arch


def test_space_scale_is_the_references():
    """The reference's defaults (D=12, width 4, N=8, N_max=64): its budget table and embedding."""
    space = space_lib.SmashSpace()
    assert space.in_channels == (64, 96, 112) and space.max_widths == (192, 224, 256)
    assert space.channel_budgets == (832, 1632, 3184) and space.max_slices == 353
    assert space.condition_layout["channels"] == 91 and space.k == 8 and space.max_banks == 32
    assert [space.bank_sizes(b) for b in range(3)] == [[1, 2, 3, 4, 6, 8], [1, 2, 3, 4, 5, 6, 8], list(range(1, 9))]
    assert [space.dilations(k) for k in (3, 5, 7)] == [(1, 2, 3), (1, 2), (1,)]
    # n_b = min(min(max(nin // (G N), 1), bottleneck) * G N, nin, max_bottleneck * N_max)
    assert space.bottleneck_units(64, 8) == 64 and space.bottleneck_units(256, 2) == 64
    assert space.bottleneck_units(512, 8) == 128 and space.bottleneck_units(16, 4) == 16


def test_sampler_matches_the_references_statistics():
    """Mean ops per block at the end-of-training budget, as the reference's sampler draws them
    (7.4 / 11.7 / 18.3 over 300 samples, measured with a NumPy re-run of its arithmetic)."""
    rng = np.random.default_rng(1)
    counts = np.array([[len(b.ops) for b in space_lib.sample(space_lib.SmashSpace(), rng).blocks]
                       for _ in range(300)])
    np.testing.assert_allclose(counts.mean(0), [7.4, 11.7, 18.3], atol=0.8)


def test_text_round_trip_and_perturbation_stay_valid():
    rng = np.random.default_rng(2)
    for _ in range(30):
        arch = space_lib.sample(TINY_SPACE, rng)
        assert space_lib.SmashArch.from_text(arch.to_text(), TINY_SPACE) == arch
        perturbed = space_lib.perturb(arch, rng, 0.5)
        assert space_lib.SmashArch.from_text(perturbed.to_text(), TINY_SPACE) == perturbed
        space_lib.conditioning(perturbed)
    assert space_lib.perturb(arch, rng, 0.0) == arch


HEADER = "smash-v1 N=4 width=2 N_max=16 bottleneck=4/2"


@pytest.mark.parametrize("text, message", [
    ("v0 N=4 | bs=1 | bs=1 | bs=1", "must start with 'smash-v1'"),
    (f"{HEADER} | bs=1 | bs=1", "2 blocks, not 3"),
    (f"{HEADER} | bs=2 0,3>4:G2:k3x3:d1x1:g1 | bs=1 | bs=1", "among the 2 banks written so far"),
    (f"{HEADER} | bs=2 0>2:G3:k3x3:d1x1:g1 | bs=1 | bs=1", "G=3 must be a multiple of the bank size 2"),
    (f"{HEADER} | bs=2 0>3:G2:k3x3:d1x1:g1 | bs=1 | bs=1", "new banks in order from 2"),
    (f"{HEADER} | bs=2 0>2:G2:k3x3:d1x1:g3 | bs=1 | bs=1", "groups=3 must divide N=4"),
    (f"{HEADER} | bs=2 0>2:G2:k4x3:d1x1:g1 | bs=1 | bs=1", "kernel sizes must be odd"),
    (f"{HEADER} | bs=2 0>2:G2:k3:d1x1:g1 | bs=1 | bs=1", "is not reads>writes"),
    (f"{HEADER} | bs=9 | bs=1 | bs=1", "bank size 9 outside 1..4"),
    ("smash-v1 N=4 | bs=1 | bs=1 | bs=1", "header needs N=, width=, N_max="),
])
def test_malformed_architectures_get_one_line_errors(text, message):
    with pytest.raises(ScasError, match=message) as error:
        space_lib.SmashArch.from_text(text)
    assert "\n" not in str(error.value)
    with pytest.raises(ScasError, match="malformed SMASH"):  # through an architecture spec too
        architectures.parse(f"smash:{text}")


def test_conditioning_of_a_hand_made_architecture():
    """Block 0 has 2 banks of 2 units (bs=2, N=4): an op reading both, writing a new third,
    G=2, kernel 3x5, dilation 2x1, 2 groups covers columns 0 and 1 (one per read bank, dc=2)."""
    arch = space_lib.SmashArch.from_text(f"{HEADER} | bs=2 0,1>2:G2:k3x5:d2x1:g2 | bs=1 | bs=1", TINY_SPACE)
    layout = TINY_SPACE.condition_layout
    c = space_lib.conditioning(arch)
    assert c.shape == (TINY_SPACE.k, 3, layout["channels"])  # 2 columns used + 1 spare
    kernels = TINY_SPACE.kernel_sizes()
    common = [layout["write"] + 2, layout["block"] + 0, layout["units"] + 1, layout["dilation"] + 1,
              layout["dilation"] + TINY_SPACE.max_dilate + 0, layout["kernel"] + kernels.index(3),
              layout["kernel"] + len(kernels) + kernels.index(5),
              layout["groups"] + TINY_SPACE.group_choices.index(2)]
    for column, bank in ((0, 0), (1, 1)):
        hot = sorted([layout["read"] + bank] + common)
        for row in range(2):  # rows below G
            assert sorted(np.flatnonzero(c[row, column] == 1)) == hot
    assert (c[2:] == -1).all() and (c[:, 2] == -1).all()  # rows >= G and the spare column
    assert layout["groups"] + TINY_SPACE.group_choices.index(1) not in common  # groups=1 has its own slot


def test_generated_weights_follow_the_references_layout():
    """Row dc*N*s + v, column m*N_max + N*a + u hold HyperNet output channel (m, u, v) at (a, s)."""
    network = models.SearchNetwork(TINY_SPACE, INFO)
    space, slices = TINY_SPACE, 3
    channels = space.max_bottleneck * space.N * space.slice_channels
    out = tf.random.normal([1, space.k, slices, channels])
    weights = network.stacked_1x1_weights(out).numpy()
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, s, m, u, v = (rng.integers(n) for n in (space.k, slices, space.max_bottleneck, space.N, space.slice_channels))
        expected = out[0, a, s, (m * space.N + u) * space.slice_channels + v]
        assert weights[space.slice_channels * s + v, m * space.N_max + space.N * a + u] == expected


def test_prune_segments_prunes_each_weight_as_prune_tensor_and_blocks_their_gradients():
    rng = np.random.default_rng(3)
    weights = tf.Variable(np.round(rng.normal(size=(12, 6)), 1).astype(np.float32))  # ties included
    segments = -np.ones((12, 6), np.int32)
    segments[0:4, :3], segments[4:10, :6], segments[10:12, :1] = 0, 1, 2
    schedule = pruning.PruningConfig(0.7, 0, 10, 1).schedule()
    upstream = tf.constant(rng.normal(size=(12, 6)).astype(np.float32))
    with tf.GradientTape() as tape:
        pruned, mask = pruning.prune_segments(weights, segments, 3, schedule(10)[1])
        loss = tf.reduce_sum(pruned * upstream)
    for rows, cols in ((slice(0, 4), slice(0, 3)), (slice(4, 10), slice(0, 6)), (slice(10, 12), slice(0, 1))):
        expected = pruning.prune_tensor(weights[rows, cols], schedule, 10)
        np.testing.assert_array_equal(pruned.numpy()[rows, cols], expected.numpy())
    assert (pruned.numpy()[segments < 0] == 0).all()
    np.testing.assert_array_equal(tape.gradient(loss, weights).numpy(), upstream.numpy() * mask.numpy())


def test_op_kernels_are_pruned_to_the_schedule_and_norm_divided():
    network = models.SearchNetwork(TINY_SPACE, INFO)
    arch = arch_with_ops()
    condition = space_lib.conditioning(arch)
    noise = np.random.default_rng(0).standard_normal((*condition.shape[:2], 1)).astype(np.float32)
    schedule = pruning.PruningConfig(0.8, 0, 10, 1).schedule()
    kernels = network.op_kernels(arch, condition, noise, schedule, 5)  # mid-schedule
    sparsity = float(schedule(5)[1])
    assert 0.1 < sparsity < 0.8
    generated = network.generated_weights(tf.concat([noise, condition], -1)[None])
    layout, _ = network.op_layout(arch)
    assert len(kernels) == arch.num_ops() == len(layout)
    for kernel, (row, rows, columns) in zip(kernels, layout):
        assert kernel.shape == (1, 1, rows, columns)
        expected = pruning.prune_tensor(generated[row:row + rows, :columns], schedule, 5)
        np.testing.assert_allclose(kernel.numpy()[0, 0], (expected / tf.norm(expected)).numpy(), rtol=1e-5, atol=1e-7)
        assert np.count_nonzero(kernel.numpy()) == max(1, round(rows * columns * (1 - sparsity)))


def copy_search_weights(model, network, arch, kernels):
    """The search network's weights for `arch` into its fixed network built with sandwich=False."""
    def kernel_of(name):
        return model.get_layer(f"masked_layer_{name}").layer.kernel
    kernel_of("stem").assign(network.stem.layer.kernel)
    remaining = iter(kernels)
    for b, block in enumerate(arch.blocks):
        for i, op in enumerate(block.ops):
            kernel_of(f"{models.op_names(b, i)}_1x1").assign(next(remaining))
            conv = kernel_of(f"{models.op_names(b, i)}_conv")
            conv.assign(network.spatial[b].layer.sliced(conv.shape[2], conv.shape[3], op.kernel))
    bns = [(f"transition{b}_bn", network.transition_bn[b]) for b in range(2)] + [("head_bn", network.head_bn)]
    for name, sliced in bns:
        bn = model.get_layer(name)
        c = bn.gamma.shape[0]
        for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
            getattr(bn, attr).assign(getattr(sliced, attr)[:c])
    for b in range(2):
        target = kernel_of(f"transition{b}_1x1")
        target.assign(network.transition_conv[b].layer.kernel[:, :, :target.shape[2]])
    classifier = model.get_layer("masked_layer_classifier").layer
    classifier.kernel.assign(network.classifier.layer.kernel[:classifier.kernel.shape[0]])
    classifier.bias.assign(network.classifier.layer.bias)


def test_fixed_network_given_the_generated_weights_computes_the_search_network():
    network = models.SearchNetwork(TINY_SPACE, INFO)
    rng = np.random.default_rng(4)
    for bn in (*network.transition_bn, network.head_bn):  # statistics and affine parameters that matter
        for attr, low in (("moving_mean", -0.5), ("moving_variance", 0.5), ("gamma", 0.5), ("beta", -0.5)):
            variable = getattr(bn, attr)
            variable.assign(rng.uniform(low, low + 1.0, variable.shape).astype(np.float32))
    arch = arch_with_ops(seed=5)
    condition = space_lib.conditioning(arch)
    noise = rng.standard_normal((*condition.shape[:2], 1)).astype(np.float32)
    schedule = pruning.PruningConfig(0.5, 0, 10, 1).schedule()
    kernels = network.op_kernels(arch, condition, noise, schedule, 10)
    model = models.build_smash_model(arch, INFO, sandwich=False)
    copy_search_weights(model, network, arch, kernels)
    images = tf.random.uniform([4, *INFO.image_shape])
    expected = network.forward(images, arch, kernels, training=False)
    np.testing.assert_allclose(model(images, training=False).numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)


def test_fixed_network_is_the_references_main_net():
    """BN-ReLU-1x1-BN-ReLU-conv per op, every kernel pruned and counted, grouped and dilated
    convolutions as sampled; an architecture file reads back into the same model."""
    arch = arch_with_ops(seed=6)
    spec = architectures.spec("smash", arch)
    model = architectures.build_model(spec, INFO)
    ops = [op for block in arch.blocks for op in block.ops]
    for i, op in enumerate(arch.blocks[0].ops):
        conv = model.get_layer(f"masked_layer_{models.op_names(0, i)}_conv").layer
        assert conv.groups == op.groups and tuple(conv.dilation_rate) == op.dilation
        assert tuple(conv.kernel_size) == op.kernel and conv.filters == op.units * TINY_SPACE.N
    assert len([layer for layer in model.layers if "_bn" in layer.name]) == 2 * len(ops) + 3
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.random.uniform([2, *INFO.image_shape]), training=True))
    assert all(g is not None for g in tape.gradient(loss, model.trainable_variables))
    with pytest.raises(ScasError, match="fixes its widths"):
        architectures.build_model(spec, INFO, filters=16)


def test_annealing_follows_the_reference():
    """Budget 0.5 -> 1 over the first half; kernel 5 allowed from 12.5% of training, 7 from 37.5%."""
    space = space_lib.SmashSpace()
    progress = (0.0, 0.124, 0.125, 0.374, 0.375, 0.5, 1.0)
    assert [search_lib.annealed(space, p)[1] for p in progress] == [3, 3, 5, 5, 7, 7, 7]
    np.testing.assert_allclose([search_lib.annealed(space, p)[0] for p in progress],
                               [0.5, 0.624, 0.625, 0.874, 0.875, 1.0, 1.0])


def test_training_steps_run_under_mirrored_strategy_and_prune_both_kinds_of_weight(tmp_path, mirrored):
    config = dataclasses.replace(TINY, target_sparsity=0.5, pruning_begin=0.0, pruning_end=0.01, pruning_frequency=1)
    splits = data.load_splits("mnist_mini", validation_fraction=0.2)
    search = search_lib.SmashSearch(config, splits, tmp_path, mirrored)
    hyper = [v.numpy() for v in search.network.hypernet.trainable_variables]
    batches = iter(mirrored.experimental_distribute_dataset(
        data.train_dataset(splits.train, splits.info, config.batch_size, 0, 0)))
    for _ in range(2):
        search.train_step(*next(batches))
    assert search.step == 2
    assert all(np.abs(a - v.numpy()).max() > 0 for a, v in zip(hyper, search.network.hypernet.trainable_variables))
    assert pruning.overall_sparsity(search.pruner.report()) == pytest.approx(0.5, abs=1e-3)
    arch = search.sample(search.step, search_lib.TRAIN, search.step)
    kernels = search.network.op_kernels(arch, *search.inputs(arch, 0), search.schedule, search.step)
    assert sum(np.count_nonzero(k) for k in kernels) / sum(np.size(k) for k in kernels) == pytest.approx(0.5, abs=0.02)


def test_scoring_perturbs_the_best_random_then_walks_greedily_from_the_best_so_far(tmp_path):
    config = dataclasses.replace(TINY, num_random=6, num_perturbed=5, num_markov=8, perturb_probability=0.5)
    search = search_lib.SmashSearch(config, data.load_splits("mnist_mini", validation_fraction=0.2), tmp_path)
    errors = np.random.default_rng(7).uniform(size=19)
    perturbed_from = []
    original = space_lib.perturb

    def recording_perturb(arch, rng, probability):
        perturbed_from.append(arch)
        return original(arch, rng, probability)
    with mock.patch.object(search_lib.SmashSearch, "error", lambda self, arch, index, batches: errors[index]), \
            mock.patch.object(space_lib, "perturb", recording_perturb):
        candidates = search.score_architectures([])
    by_index = {c["index"]: space_lib.SmashArch.from_text(c["architecture"], TINY_SPACE) for c in candidates}
    best_random = by_index[int(np.argmin(errors[:6]))]
    assert all(arch == best_random for arch in perturbed_from[:5])
    current = int(np.argmin(errors[:11]))
    for step, index in enumerate(range(11, 19)):
        assert perturbed_from[5 + step] == by_index[current]
        if errors[index] < errors[current]:
            current = index
    assert candidates[0]["validation_error"] == errors.min()


def test_tiny_search_through_the_cli_resumes_mid_scoring(tmp_path, monkeypatch):
    """A search whose scoring stops after 3 architectures; the rerun trains no more and scores
    only the rest, with the same draws, then trains the best from scratch."""
    folder = tmp_path / "run"
    config = dataclasses.replace(TINY, target_sparsity=0.5)
    splits = lambda fraction: data.load_splits("mnist_mini", validation_fraction=fraction)  # noqa: E731
    original = search_lib.SmashSearch.error
    calls = []

    def failing_error(self, arch, index, batches):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(index)
        return original(self, arch, index, batches)
    with mock.patch.object(search_lib.SmashSearch, "error", failing_error), pytest.raises(KeyboardInterrupt):
        search_lib.run_search(config, splits, folder)
    first = json.loads((folder / "scores.json").read_text())
    assert [c["index"] for c in first] == [0, 1, 2]

    args = [f"--{k}={v}" for k, v in (("method", "smash"), ("preset", "tiny"), ("target_sparsity", 0.5),
                                      ("output_dir", folder))]
    run = subprocess.run([*SCAS, "search", *args], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    done, total_steps = re.search(r"resuming \S+ at step (\d+) of (\d+)", run.stderr).groups()
    assert done == total_steps  # no more training
    candidates = json.loads((folder / "candidates.json").read_text())
    total = config.num_random + config.num_perturbed + config.num_markov
    assert sorted(c["index"] for c in candidates) == list(range(total))
    assert [c for c in candidates if c["index"] < 3] == sorted(first, key=lambda c: (c["validation_error"], c["index"]))
    assert [c["stage"] for c in sorted(candidates, key=lambda c: c["index"])] == (
        ["random"] * config.num_random + ["perturbed"] * config.num_perturbed + ["markov"] * config.num_markov)
    results = json.loads((folder / "results.json").read_text())
    spec = (folder / "architecture.txt").read_text().strip()
    assert results["architecture"] == spec == f"smash:{candidates[0]['architecture']}"
    assert results["generated_weight_sparsity"] == pytest.approx(0.5)
    assert results["learned_weight_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert results["final"]["weight_sparsity"] == pytest.approx(0.5, abs=0.01)
    model = architectures.build_model(architectures.read_arch_file(folder / "architecture.txt"), INFO)
    assert model.count_params() > 0  # what `scas train --arch_file` builds


def test_correlation_study_ranks_with_ties_and_picks_the_ends():
    sys.path.insert(0, str(REPO / "experiments"))
    import smash_correlation as study
    np.testing.assert_array_equal(study.ranks([0.3, 0.1, 0.3, 0.2]), [3.5, 1.0, 3.5, 2.0])
    assert study.spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert study.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert [rank for rank, _ in study.spread(list(range(70)), 10)] == [0, 8, 15, 23, 31, 38, 46, 54, 61, 69]
    split = data.pipeline.Split(np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1), np.arange(10))
    subset = study.subsample(split, 4, seed=0)
    assert len(subset) == 4 and list(subset.labels) == sorted(subset.labels)
    np.testing.assert_array_equal(subset.images.ravel(), subset.labels)
    assert study.subsample(split, None, seed=0) is split
