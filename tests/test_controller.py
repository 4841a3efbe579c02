"""The LSTM controller and REINFORCE: consistent scoring, and learning from a synthetic reward."""
import numpy as np
import tensorflow as tf

from scas_tf.search.controller import Controller
from scas_tf.search.reinforce import Reinforce
from scas_tf.spaces import enas_macro
from scas_tf.spaces.enas_macro import MacroArch

NUM_LAYERS = 5
OP_POSITIONS = [i * (i + 1) // 2 for i in range(NUM_LAYERS)]  # layer i starts after i(i+1)/2 integers


def test_samples_are_valid_and_scoring_reproduces_their_log_probs():
    controller = Controller(enas_macro.controller_decisions(NUM_LAYERS), lstm_size=16, seed=3)
    actions, log_prob, entropy, skip_kl = controller.sample(6)
    for row in actions.numpy():
        MacroArch.from_actions(row).validate()
    scored_log_prob, scored_entropy, scored_kl = controller.score(actions)
    np.testing.assert_allclose(scored_log_prob, log_prob, rtol=1e-5)
    np.testing.assert_allclose(scored_entropy, entropy, rtol=1e-5)
    assert np.all(log_prob.numpy() < 0) and np.all(skip_kl.numpy() >= 0)


def test_reinforce_learns_to_prefer_the_rewarded_op():
    controller = Controller(enas_macro.controller_decisions(NUM_LAYERS), lstm_size=32, seed=1)
    reinforce = Reinforce(controller, learning_rate=5e-3, baseline_decay=0.9, entropy_weight=0.0)
    sample = tf.function(controller.sample)

    def rewarded_op_rate(actions):
        return (actions.numpy()[:, OP_POSITIONS] == 2).mean(axis=1).astype(np.float32)

    before = rewarded_op_rate(sample(200)[0]).mean()
    for _ in range(200):
        actions = sample(8)[0]
        reinforce.update(actions, tf.constant(rewarded_op_rate(actions)))
    after = rewarded_op_rate(sample(200)[0]).mean()
    assert before < 0.3  # about 1/6 at the start
    assert after > 0.6, after  # tanh_constant 1.5 caps a single op's probability near 0.8


def test_skip_penalty_pulls_the_skip_rate_to_its_target():
    controller = Controller(enas_macro.controller_decisions(NUM_LAYERS), lstm_size=16, skip_target=0.1, seed=2)
    reinforce = Reinforce(controller, learning_rate=1e-2, entropy_weight=0.0, skip_weight=1.0)
    sample = tf.function(controller.sample)
    for _ in range(150):
        actions = sample(8)[0]
        reinforce.update(actions, tf.zeros([8]))  # no reward signal: only the KL term acts
    rates = [MacroArch.from_actions(a).skip_rate() for a in sample(200)[0].numpy()]
    assert np.mean(rates) < 0.25
