"""The LSTM controllers and REINFORCE, against the reference's samplers and update.

The NumPy functions below re-implement melodyguan/enas's `GeneralController._build_sampler` and
`MicroController._build_sampler` (lstm_num_layers=1) from their source, independently of
scas_tf's code, and score given architectures with the Keras controllers' weights.
"""
import itertools

import numpy as np
import tensorflow as tf

from scas_tf.search.controller import MacroController, MicroController
from scas_tf.search.reinforce import Reinforce
from scas_tf.spaces import enas_macro, enas_micro
from scas_tf.spaces.enas_macro import MacroArch
from scas_tf.spaces.enas_micro import MicroArch

NUM_LAYERS = 5
OP_POSITIONS = [i * (i + 1) // 2 for i in range(NUM_LAYERS)]  # layer i starts after i(i+1)/2 integers


def log_softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


class ReferenceLstm:
    """The reference's `lstm` (no bias), with the Keras cell's weights (gate order i, f, c, o)."""

    def __init__(self, controller):
        self.kernel = controller.cell.kernel.numpy()
        self.recurrent = controller.cell.recurrent_kernel.numpy()
        self.c = self.h = np.zeros([1, controller.lstm_size], np.float32)

    def __call__(self, x):
        sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
        i, f, g, o = np.split(x @ self.kernel + self.h @ self.recurrent, 4, axis=1)
        self.c = sigmoid(i) * np.tanh(g) + sigmoid(f) * self.c
        self.h = sigmoid(o) * np.tanh(self.c)
        return self.h


def weights(controller):
    names = {"start": controller.start, "w_attn_1": controller.attend_anchor.kernel,
             "w_attn_2": controller.attend_query.kernel, "v_attn": controller.attend_score.kernel,
             "w_soft": controller.op_logits.kernel, "w_emb": controller.op_embedding.embeddings}
    if controller.op_logits.use_bias:
        names["b_soft"] = controller.op_logits.bias[None]
    return {k: v.numpy() for k, v in names.items()}


def reference_macro_score(controller, actions, tanh_constant, skip_target):
    """Log-probability and skip penalty of one macro architecture, as general_controller.py."""
    w, lstm = weights(controller), ReferenceLstm(controller)
    inputs, anchors, anchors_w_1 = w["start"], [], []
    log_prob, penalties, position = 0.0, [], 0
    for layer in range(controller.num_layers):
        h = lstm(inputs)
        logit = tanh_constant * np.tanh(h @ w["w_soft"])
        op = actions[position]
        log_prob += log_softmax(logit)[0, op]
        h = lstm(w["w_emb"][[op]])
        if layer > 0:
            query = np.tanh(np.concatenate(anchors_w_1) + h @ w["w_attn_2"]) @ w["v_attn"]
            logit = tanh_constant * np.tanh(np.concatenate([-query, query], axis=1))
            skip = np.array(actions[position + 1:position + 1 + layer])
            log_prob += log_softmax(logit)[np.arange(layer), skip].sum()
            skip_prob = 1 / (1 + np.exp(-logit))
            penalties.append((skip_prob * np.log(skip_prob / [1 - skip_target, skip_target])).sum())
            inputs = skip[None].astype(np.float32) @ np.concatenate(anchors) / (1.0 + skip.sum())
        else:
            inputs = w["start"]
        anchors.append(h)
        anchors_w_1.append(h @ w["w_attn_1"])
        position += 1 + layer
    return log_prob, np.mean(penalties)


def reference_micro_score(controller, actions, tanh_constant, op_tanh_reduce):
    """Log-probability of one micro architecture, as micro_controller.py (two samplers, the
    second continuing the first's LSTM state; the fixed bias only in the first)."""
    w, lstm = weights(controller), ReferenceLstm(controller)
    fixed = np.array([[0.25, 0.25, -0.25, -0.25, -0.25]])
    log_prob = 0.0
    for cell in range(2):
        inputs, anchors, anchors_w_1 = w["start"], [], []
        for _ in range(2):
            h = lstm(inputs)
            anchors.append(np.zeros_like(h))
            anchors_w_1.append(h @ w["w_attn_1"])
        for node in range(enas_micro.NUM_NODES):
            start = 20 * cell + 4 * node
            for i in range(2):
                h = lstm(inputs)
                query = np.tanh(np.concatenate(anchors_w_1) + h @ w["w_attn_2"]) @ w["v_attn"]
                logits = tanh_constant * np.tanh(query.reshape(1, -1))
                index = actions[start + 2 * i]
                log_prob += log_softmax(logits)[0, index]
                inputs = anchors[index]
            for i in range(2):
                h = lstm(inputs)
                logits = tanh_constant / op_tanh_reduce * np.tanh(h @ w["w_soft"] + w["b_soft"])
                logits = logits + (fixed if cell == 0 else 0.0)
                op = actions[start + 2 * i + 1]
                log_prob += log_softmax(logits)[0, op]
                inputs = w["w_emb"][[op]]
            h = lstm(inputs)
            anchors.append(h)
            anchors_w_1.append(h @ w["w_attn_1"])
            inputs = w["start"]
    return log_prob


def test_macro_policy_scores_as_the_reference_sampler():
    controller = MacroController(NUM_LAYERS, len(enas_macro.OPS), lstm_size=16, tanh_constant=1.5,
                                 skip_target=0.4, seed=3)
    actions, log_prob, entropy, skip_kl = controller.sample(6)
    for row in actions.numpy():
        MacroArch.from_actions(row).validate()
    scored_log_prob, scored_entropy, scored_kl = controller.score(actions)
    np.testing.assert_allclose(scored_log_prob, log_prob, rtol=1e-5)
    np.testing.assert_allclose(scored_entropy, entropy, rtol=1e-5)
    for row, lp, kl in zip(actions.numpy(), log_prob.numpy(), skip_kl.numpy()):
        ref_lp, ref_kl = reference_macro_score(controller, row, 1.5, 0.4)
        np.testing.assert_allclose([lp, kl], [ref_lp, ref_kl], rtol=1e-4)


def test_micro_policy_scores_as_the_reference_sampler():
    controller = MicroController(lstm_size=16, tanh_constant=1.1, op_tanh_reduce=2.5, seed=4)
    actions, log_prob, entropy, skip_kl = controller.sample(6)
    for row in actions.numpy():
        MicroArch.from_actions(row)  # validates every input index against its node
    np.testing.assert_allclose(controller.score(actions)[0], log_prob, rtol=1e-5)
    assert not np.any(skip_kl.numpy())
    for row, lp in zip(actions.numpy(), log_prob.numpy()):
        np.testing.assert_allclose(lp, reference_micro_score(controller, row, 1.1, 2.5), rtol=1e-4)


def test_micro_controller_starts_favouring_separable_ops_as_the_reference():
    """The reference's op bias [10, 10, 0, 0, 0] (learnable) saturates tanh, and the normal
    cell adds [0.25, 0.25, -0.25, ...] after squashing: with tanh 1.1 / 2.5, about 63% of the
    normal cell's ops and 51% of the reduction cell's are separable convolutions."""
    squashed = 1.1 / 2.5 * np.tanh(np.array([10.0, 10.0, 0.0, 0.0, 0.0]))
    normal = np.exp(log_softmax(squashed + [0.25, 0.25, -0.25, -0.25, -0.25]))[:2].sum()
    reduce = np.exp(log_softmax(squashed))[:2].sum()
    assert 0.62 < normal < 0.64 and 0.50 < reduce < 0.52
    controller = MicroController(tanh_constant=1.1, op_tanh_reduce=2.5, seed=0)
    archs = [MicroArch.from_actions(a) for a in controller.sample(1000)[0].numpy()]
    for cell, expected in (("normal", normal), ("reduce", reduce)):
        ops = [op for arch in archs for op in arch.op_names()[cell]]
        share = np.mean([op.startswith("sep") for op in ops])
        assert abs(share - expected) < 0.02, (cell, share, expected)


def test_policy_probabilities_are_the_marginals_of_the_architectures_sample_draws():
    """sample_with_policy draws what sample draws from the same generator state, and each
    decision's mean probability is the rate at which samples make each choice there."""
    controller = MacroController(NUM_LAYERS, len(enas_macro.OPS), lstm_size=16, seed=3)
    controller.sample(1)
    for weight in controller.trainable_weights:  # a peaked policy, its choices depending on earlier ones
        weight.assign(20 * weight)
    controller.rng.reset_from_seed(7)
    actions = controller.sample(4000)[0].numpy()
    controller.rng.reset_from_seed(7)
    again, *_, probabilities = controller.sample_with_policy(4000)
    np.testing.assert_array_equal(again.numpy(), actions)
    assert [p.shape[0] for p in probabilities] == [
        size for layer in range(NUM_LAYERS) for size in [len(enas_macro.OPS)] + [2] * layer]
    frequencies = [np.bincount(actions[:, position], minlength=p.shape[0]) / len(actions)
                   for position, p in enumerate(probabilities)]
    np.testing.assert_allclose(np.concatenate(probabilities), np.concatenate(frequencies), atol=0.04)
    assert min(p.numpy().max() - 1 / p.shape[0] for p in probabilities) > 0.05  # no decision near uniform


def test_no_two_controller_weights_start_equal():
    for controller in (MacroController(12, 6, seed=0), MicroController(seed=0)):
        controller.sample(1)  # builds every weight
        values = [w.numpy() for w in controller.trainable_weights if "bias" not in w.name]
        for a, b in itertools.combinations(values, 2):
            assert a.shape != b.shape or not np.allclose(a, b)
        assert all(np.abs(v).max() <= 0.1 for v in values)  # the reference's U[-0.1, 0.1]


def test_macro_skip_penalty_is_a_mean_over_layers():
    """With the attention's output weights at zero every skip logit is 0, so each bit's KL term
    is c = ln(0.5 / 0.6) / 2 + ln(0.5 / 0.4) / 2 and layer i contributes i * c; the reference
    averages over the L - 1 layers with skips: c * L / 2 (a sum would be c * L(L-1)/2)."""
    num_layers = 12
    controller = MacroController(num_layers, 6, skip_target=0.4, seed=0)
    controller.sample(1)
    controller.attend_score.kernel.assign(tf.zeros_like(controller.attend_score.kernel))
    c = 0.5 * np.log(0.5 / 0.6) + 0.5 * np.log(0.5 / 0.4)
    np.testing.assert_allclose(controller.sample(3)[3].numpy(), c * num_layers / 2, rtol=1e-5)


def test_baseline_moves_once_per_architecture_before_its_advantage():
    controller = MacroController(NUM_LAYERS, 6, lstm_size=8, seed=5)
    reinforce = Reinforce(controller, learning_rate=0.0, baseline_decay=0.9, entropy_weight=0.0)
    actions = controller.sample(3)[0]
    log_prob = controller.score(actions)[0].numpy()
    metrics = reinforce.update(actions, tf.constant([0.5, 0.7, 0.9]))
    # b1 = 0 - 0.1 (0 - 0.5) = 0.05; b2 = 0.05 - 0.1 (0.05 - 0.7) = 0.115; b3 = 0.1935.
    np.testing.assert_allclose(reinforce.baseline.numpy(), 0.1935, rtol=1e-6)
    advantages = np.array([0.5 - 0.05, 0.7 - 0.115, 0.9 - 0.1935])
    np.testing.assert_allclose(metrics["loss"].numpy(), np.mean(-log_prob * advantages), rtol=1e-5)


def test_reinforce_learns_to_prefer_the_rewarded_op():
    controller = MacroController(NUM_LAYERS, 6, lstm_size=32, seed=1)
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
    controller = MacroController(NUM_LAYERS, 6, lstm_size=16, skip_target=0.1, seed=2)
    reinforce = Reinforce(controller, learning_rate=1e-2, entropy_weight=0.0, skip_weight=1.0)
    sample = tf.function(controller.sample)
    for _ in range(150):
        actions = sample(8)[0]
        reinforce.update(actions, tf.zeros([8]))  # no reward signal: only the KL term acts
    rates = [MacroArch.from_actions(a).skip_rate() for a in sample(200)[0].numpy()]
    assert np.mean(rates) < 0.25
