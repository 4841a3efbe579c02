"""ENAS micro: the encoding, the fixed builder on the published architecture, and the supernet
(one trace for every architecture, real gradients, every kernel pruned)."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from scas_tf import pruning
from scas_tf.data.sources import dataset_info
from scas_tf.errors import ScasError
from scas_tf.models.enas_micro import MicroSupernet, build_micro_model
from scas_tf.spaces.enas_micro import MicroArch, controller_decisions, unused_nodes

# The reference's final architecture (scripts/cifar10_micro_final.sh).
REFERENCE_NORMAL = "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1"
REFERENCE_REDUCE = "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1"
REFERENCE = f"{REFERENCE_NORMAL} {REFERENCE_REDUCE}"


def test_text_and_actions_round_trip_for_random_samples():
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = MicroArch.sample(rng)
        assert MicroArch.from_text(arch.to_text()) == arch
        assert MicroArch.from_actions(arch.actions) == arch
        assert len(arch.to_text().split(" ")) == 40
        spaced = f" {' | '.join(map(str, arch.normal))} |\n\t{'  '.join(map(str, arch.reduce))} "
        assert MicroArch.from_text(spaced) == arch


def test_sampling_covers_every_choice_and_matches_decisions():
    decisions = controller_decisions()
    assert len(decisions) == 40
    assert [d.new_group for d in decisions if d.new_group] == [2, 2]
    assert decisions[0].new_group == decisions[20].new_group == 2
    assert [d.kind for d in decisions[:4]] == ["input", "op", "input", "op"]
    assert [d.size for d in decisions[16:20]] == [6, 5, 6, 5]
    assert [d.add_anchor for d in decisions[:4]] == [False, False, False, True]
    assert {d.op_group for d in decisions[:20] if d.kind == "op"} == {"normal"}
    assert {d.op_group for d in decisions[20:] if d.kind == "op"} == {"reduce"}
    rng = np.random.default_rng(1)
    seen = np.array([MicroArch.sample(rng).actions for _ in range(300)])
    for position, decision in enumerate(decisions):
        assert set(seen[:, position]) == set(range(decision.size)), position


@pytest.mark.parametrize("text, reason", [
    ("0 2 0 0", "expected 40 integers"),
    (REFERENCE.replace("4", "x", 1), "'x' is not an integer"),
    (REFERENCE.replace("2", "2.0", 1), "'2.0' is not an integer"),
    ("2 " + REFERENCE[2:], "normal cell node 2: input 2 is not in 0..1"),
    (REFERENCE_NORMAL + " 1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 7 1", "reduce cell node 6: input 7 is not in 0..5"),
    (REFERENCE.replace("4", "5", 1), "normal cell node 3: op 5 is not in 0..4"),
    ("-1 " + REFERENCE[2:], "input -1"),
])
def test_malformed_strings_are_user_errors(text, reason):
    with pytest.raises(ScasError, match="malformed ENAS micro architecture") as error:
        MicroArch.from_text(text)
    assert reason in str(error.value) and "\n" not in str(error.value)


def test_reference_architecture_parses_with_reference_outputs():
    arch = MicroArch.from_text(REFERENCE)
    assert arch.to_text() == REFERENCE
    assert unused_nodes(arch.normal) == [2, 3, 4, 5, 6]
    assert unused_nodes(arch.reduce) == [2, 4, 5, 6]
    with pytest.raises(ScasError):
        MicroArch(arch.normal[:-1], arch.reduce)


def test_fixed_model_of_reference_architecture():
    info = dataset_info("cifar10")
    filters = 8
    model = build_micro_model(REFERENCE, info, num_layers=2, filters=filters)
    assert model(tf.random.normal((2,) + info.image_shape), training=False).shape == (2, 10)
    # Cells: reduce, reduce, normal, normal; the last normal cell concatenates 5 nodes of 4F.
    pooled = next(layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D))
    assert pooled.input_shape == (None, 8, 8, 5 * 4 * filters)
    kernels = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    assert not any(isinstance(layer, kernels) for layer in model.layers)  # all wrapped
    stripped = pruning.strip(model)  # wrappers sit at top level, so export strips them all
    assert not pruning.find_wrappers(stripped)


def supernet_train_step(supernet, pruner, optimizer):
    @tf.function
    def step(images, labels, arch):
        with tf.GradientTape() as tape:
            logits = supernet(images, arch, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        variables = supernet.trainable_variables
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(pruner.mask_gradients(grads, variables), variables))
        pruner.update_masks(optimizer.iterations)
        return {v.name: g for v, g in zip(variables, grads)}

    return step


def test_supernet_one_trace_real_gradients_and_full_pruning():
    info = dataset_info("cifar10")
    supernet = MicroSupernet(info, num_layers=1, filters=8)  # cells: reduce, reduce, normal
    pruner = pruning.Pruner(supernet, pruning.PruningConfig(0.8, 0, 4, 1))
    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(supernet.trainable_variables)  # a variable made while tracing would retrace
    step = supernet_train_step(supernet, pruner, optimizer)
    reference = MicroArch.from_text(REFERENCE)
    no_convs = MicroArch.sample(np.random.default_rng(2)).actions
    no_convs = tuple(v if i % 2 == 0 else 2 + v % 3 for i, v in enumerate(no_convs))  # pools, identity
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(2,) + info.image_shape), tf.float32)
    labels = tf.constant([3, 7])
    for arch in (reference.actions, no_convs) * 3:
        grads = step(images, labels, tf.constant(arch, tf.int32))
        depthwise = [g for name, g in grads.items() if "depthwise_kernel" in name]
        moved = sum(int(tf.math.count_nonzero(g)) for g in depthwise)
        # Only a sampled op trains: with no separable op chosen, no depthwise kernel moves.
        assert (moved > 0) == (arch == reference.actions)
        assert any(float(tf.norm(g)) > 0 for g in grads.values())
    assert step.experimental_get_tracing_count() == 1

    report = pruner.report()
    # 3 cells x 5 nodes x 2 slots x 2 separable ops x 2 depthwise convs, each held once.
    assert sum("depthwise_kernel" in w.name for w in report) == 3 * 40
    for weight in report:
        assert abs(weight.sparsity - 0.8) < 0.02, weight
