"""The fixed-architecture trainer: a tiny real run, a MirroredStrategy run, resume and refusal."""
import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from scas_tf import configs, data, trainer
from scas_tf.errors import ScasError
from scas_tf.models import build_baseline

TINY = dataclasses.replace(configs.TRAIN_PRESETS["tiny"], target_sparsity=0.8, epochs=1)


@pytest.fixture(scope="module")
def splits():
    return data.load_splits("mnist_mini", validation_fraction=TINY.validation_fraction)


def run(splits, config, run_dir, strategy=None):
    return trainer.train(lambda: build_baseline(config.arch, splits.info), splits, config, run_dir, strategy)


def test_tiny_run_learns_reaches_sparsity_and_writes_its_folder(splits, tmp_path):
    results = run(splits, TINY, tmp_path)
    assert results["steps"] == len(splits.train) // TINY.batch_size
    assert abs(results["weight_sparsity"] - 0.8) < 0.01  # every kernel counted, depthwise included
    assert results["nonzero_prunable_params"] < results["prunable_params"] * 0.21
    assert results["sparse_macs"] < 0.3 * results["dense_macs"]
    assert results["test_accuracy"] > 0.5  # well above the 0.1 of chance, after one small epoch
    assert results["images_per_second"] > 0 and results["train_seconds"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["steps"] == results["steps"]
    assert json.loads((tmp_path / "config.json").read_text())["target_sparsity"] == 0.8
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    reloaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    kernels = [v for v in reloaded.model_weights if "kernel" in v.name]
    assert kernels and not any(v.name.split("/")[-1].startswith(("mask", "threshold")) for v in reloaded.model_weights)
    zeros = sum(int(tf.size(k)) - int(tf.math.count_nonzero(k)) for k in kernels)
    assert zeros / sum(int(tf.size(k)) for k in kernels) == pytest.approx(0.8, abs=0.01)
    serve = reloaded.signatures["serving_default"]  # raw uint8 pixels in: standardisation is inside
    predictions = serve(images=tf.constant(splits.test.images))["probabilities"].numpy().argmax(-1)
    assert np.mean(predictions == splits.test.labels) == pytest.approx(results["test_accuracy"], abs=1e-3)
    # A finished run is not redone: a rerun returns its results as written.
    assert run(splits, TINY, tmp_path) == json.loads(json.dumps(results))


def test_mirrored_strategy_over_two_cpus_trains_the_same_way(splits, tmp_path, mirrored):
    strategy = mirrored
    results = run(splits, TINY, tmp_path, strategy)
    assert results["num_replicas"] == 2
    assert results["steps"] == len(splits.train) // TINY.batch_size
    assert abs(results["weight_sparsity"] - 0.8) < 0.01
    assert results["test_accuracy"] > 0.5


def test_folder_of_another_config_is_refused(splits, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(TINY)))
    with pytest.raises(ScasError, match=r"another config \(target_sparsity=0.8 there vs 0.5 now\)"):
        run(splits, dataclasses.replace(TINY, target_sparsity=0.5), tmp_path)


def test_pruning_window_ends_on_an_update_step():
    config = trainer.TrainConfig(pruning_begin=0.1, pruning_end=0.6, pruning_frequency=7)
    schedule = config.pruning_config(total_steps=1000)
    assert schedule.begin_step == 100 and (schedule.end_step - schedule.begin_step) % 7 == 0
    assert schedule.end_step <= 600


def test_sgdr_restarts_at_the_reference_epochs():
    """ENAS's SGDR: T0 = 10 epochs, Tmul = 2, from the peak down to the minimum each period,
    restarting at epochs 10, 30, 70, ..."""
    steps_per_epoch = 5
    lr = trainer.cosine_schedule(0.05, 5e-4, 310 * steps_per_epoch, restart_steps=10 * steps_per_epoch)
    for restart_epoch in (0, 10, 30, 70, 150):
        assert float(lr(restart_epoch * steps_per_epoch)) == pytest.approx(0.05)
        assert float(lr(restart_epoch * steps_per_epoch - 1)) == pytest.approx(5e-4, abs=1e-4) or restart_epoch == 0
    assert float(lr(20 * steps_per_epoch)) == pytest.approx((0.05 + 5e-4) / 2, rel=1e-3)  # mid second period
    with pytest.raises(ScasError, match="cannot be combined"):
        trainer.TrainConfig(lr_restart_epochs=10, warmup_epochs=1)


def test_decay_of_all_variables_has_the_references_scale():
    """ENAS's reference adds l2_reg * sum(w^2) over every variable; weight_decay = 2 * l2_reg
    with decay_all_variables gives exactly that, BN scale and offset included."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Dense(3)(inputs)))
    for variable in model.trainable_variables:
        variable.assign(tf.random.normal(variable.shape))
    l2_reg = 1e-3
    loss = trainer.regularized_loss(model, tf.zeros([2]), 2 * l2_reg, 2, decay_all_variables=True)
    expected = l2_reg * sum(float(tf.reduce_sum(v ** 2)) for v in model.trainable_variables)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    kernels_only = trainer.regularized_loss(model, tf.zeros([2]), 2 * l2_reg, 2)
    np.testing.assert_allclose(float(kernels_only), l2_reg * float(tf.reduce_sum(model.trainable_variables[0] ** 2)), rtol=1e-5)
