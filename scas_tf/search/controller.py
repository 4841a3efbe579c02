"""ENAS's controllers: LSTM policies that sample an architecture one decision at a time.

Two policies, one per search space, each following its reference sampler step for step
(melodyguan/enas `general_controller.py` and `micro_controller.py`, `lstm_num_layers=1`):
* `MacroController`: per layer an LSTM step for the op (its embedding is the next input),
  then an LSTM step whose output scores the skip bits by additive attention over the earlier
  layers' outputs (anchors); the mean of the chosen anchors (over 1 + their count) is the
  next input. Each skip is a two-class choice with logits [-q, q] after squashing.
* `MicroController`: per cell (normal, then reduction; the LSTM state carries over) two LSTM
  steps give the cell's inputs their attention keys (their anchor values are zero); per node,
  two input choices by attention (the chosen anchor is the next input), two op choices (the
  op's embedding is the next input), then one more LSTM step whose output becomes the node's
  anchor, and the input resets to the start embedding. Op logits have a learnable bias
  initialised to [10, 10, 0, 0, 0], and the normal cell's a fixed [0.25, 0.25, -0.25, ...]
  after squashing, so the separable convolutions start favoured. Op head and embedding are
  shared by both cells, as in the reference.
Logits are divided by the temperature and squashed to `tanh_constant * tanh(.)` (micro op
logits: `tanh_constant / op_tanh_reduce`). The LSTM has no bias (as the reference's). Every
weight is drawn from U[-0.1, 0.1] on its own. Batched over architectures; the same code samples
(actions=None) and scores given actions (teacher forcing) for REINFORCE. The action layout is
the space's text encoding.
"""
import itertools

import numpy as np
import tensorflow as tf
import tf_keras as keras

from scas_tf.spaces import enas_micro

MICRO_OP_BIAS = (10.0, 10.0, 0.0, 0.0, 0.0)  # learnable, both cells
MICRO_NORMAL_FIXED_BIAS = (0.25, 0.25, -0.25, -0.25, -0.25)  # constant, normal cell only


class Rollout:
    """One batch of architectures being sampled (or scored): the chosen actions and the
    choices' log-probabilities by position, and the summed log-probability, entropy and skip
    penalty per architecture."""

    def __init__(self, controller, batch_size, forced):
        self.controller, self.forced = controller, forced
        self.actions, self.log_probs = {}, {}
        self.log_prob = self.entropy = self.skip_kl = tf.zeros([batch_size])

    def choose(self, logits, position):
        """A categorical choice from [B, n] logits, written at `position`."""
        action = None if self.forced is None else self.forced[:, position]
        if action is None:
            gumbel = -tf.math.log(-tf.math.log(self.controller.rng.uniform(tf.shape(logits), 1e-20, 1.0)))
            action = tf.argmax(logits + gumbel, axis=-1, output_type=tf.int32)
        log_p = tf.nn.log_softmax(logits)
        self.log_prob += tf.gather(log_p, action, batch_dims=1)
        self.entropy += -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)
        self.actions[position] = action[:, None]
        self.log_probs[position] = log_p
        return action

    def choose_each(self, logits, position):
        """Independent categorical choices from [B, k, n] logits, written at position..+k."""
        chosen = [self.choose(logits[:, j], position + j) for j in range(logits.shape[1])]
        return tf.stack(chosen, axis=1)

    def result(self):
        actions = tf.concat([self.actions[p] for p in sorted(self.actions)], axis=1)
        return actions, self.log_prob, self.entropy, self.skip_kl


class Controller(keras.Model):
    """What both policies share: the LSTM cell, the start embedding, the attention, squashing."""

    def __init__(self, lstm_size=64, tanh_constant=1.5, temperature=None, seed=0, name="controller"):
        super().__init__(name=name)
        self.lstm_size, self.tanh_constant, self.temperature = lstm_size, tanh_constant, temperature
        self._seeds = itertools.count(np.random.SeedSequence(seed).generate_state(1)[0] % 2**30)
        self.cell = keras.layers.LSTMCell(lstm_size, use_bias=False, kernel_initializer=self.uniform(),
                                          recurrent_initializer=self.uniform())
        self.start = self.add_weight("start", [1, lstm_size], initializer=self.uniform())
        self.attend_anchor = self.dense(lstm_size, "attention_anchor")
        self.attend_query = self.dense(lstm_size, "attention_query")
        self.attend_score = self.dense(1, "attention_score")
        self.rng = tf.random.Generator.from_seed(seed)

    def uniform(self):
        """The reference's U[-0.1, 0.1], seeded anew for each weight: one initializer instance
        (or one seed) would give every same-shaped weight the same values."""
        return keras.initializers.RandomUniform(-0.1, 0.1, seed=next(self._seeds))

    def dense(self, units, name, bias=None):
        return keras.layers.Dense(units, use_bias=bias is not None, kernel_initializer=self.uniform(),
                                  bias_initializer=keras.initializers.Constant(bias or 0.0), name=name)

    def squash(self, logits, tanh_constant=None):
        if self.temperature:
            logits = logits / self.temperature
        return (tanh_constant or self.tanh_constant) * tf.tanh(logits)

    def attention(self, keys, h):
        """Unsquashed scores [B, n] of n anchors' keys (each attend_anchor(anchor)) against h."""
        return self.attend_score(tf.tanh(tf.stack(keys, axis=1) + self.attend_query(h)[:, None]))[..., 0]

    def initial_state(self, batch_size):
        return [tf.zeros([batch_size, self.lstm_size])] * 2, tf.tile(self.start, [batch_size, 1])

    def sample(self, batch_size):
        """Samples architectures: (actions [B, num_actions] int32, log_prob, entropy, skip_kl)."""
        return self.run_policy(Rollout(self, batch_size, None), batch_size)

    def sample_with_policy(self, batch_size):
        """sample(batch_size), drawing the same architectures, plus the policy's marginal
        probabilities: per decision (in action order), each choice's probability given the
        earlier decisions, averaged over the batch. That is the probability that sample()
        makes that choice there, with far less noise than counting the batch's choices."""
        rollout = Rollout(self, batch_size, None)
        sampled = self.run_policy(rollout, batch_size)
        return (*sampled, [tf.reduce_mean(tf.exp(rollout.log_probs[p]), axis=0) for p in sorted(rollout.log_probs)])

    def score(self, actions):
        """Log-probability, entropy and skip penalty [B] of given actions, differentiably."""
        batch_size = tf.shape(actions)[0]
        return self.run_policy(Rollout(self, batch_size, actions), batch_size)[1:]


class MacroController(Controller):
    """The policy over ENAS macro architectures of `num_layers` layers."""

    def __init__(self, num_layers, num_ops, lstm_size=64, tanh_constant=1.5, temperature=None,
                 skip_target=0.4, seed=0):
        super().__init__(lstm_size, tanh_constant, temperature, seed)
        self.num_layers, self.skip_target = num_layers, skip_target
        self.op_logits = self.dense(num_ops, "op_logits")
        self.op_embedding = keras.layers.Embedding(num_ops, lstm_size, embeddings_initializer=self.uniform(),
                                                   name="op_embedding")

    def run_policy(self, rollout, batch_size):
        state, inputs = self.initial_state(batch_size)
        anchors, keys, kls, position = [], [], [], 0
        for layer in range(self.num_layers):
            h, state = self.cell(inputs, state)
            op = rollout.choose(self.squash(self.op_logits(h)), position)
            h, state = self.cell(self.op_embedding(op), state)
            if layer:
                score = self.attention(keys, h)
                skip_logits = self.squash(tf.stack([-score, score], axis=-1))  # [B, layer, 2]
                skips = rollout.choose_each(skip_logits, position + 1)
                kls.append(self.skip_penalty(skip_logits))
                chosen = tf.cast(skips, tf.float32)[:, :, None]
                inputs = tf.reduce_sum(chosen * tf.stack(anchors, axis=1), axis=1) / (
                    1.0 + tf.reduce_sum(chosen, axis=1))
            else:
                inputs = tf.tile(self.start, [batch_size, 1])
            anchors.append(h)
            keys.append(self.attend_anchor(h))
            position += 1 + layer
        if kls:
            rollout.skip_kl = tf.reduce_mean(tf.stack(kls, axis=1), axis=1)  # a mean over layers
        return rollout.result()

    def skip_penalty(self, skip_logits):
        """The reference's KL term of one layer: sum over bits of KL(sigmoid(logits) || [1-t, t]),
        with the sigmoid of each squashed two-class logit (not the bit's softmax probability)."""
        p = tf.sigmoid(skip_logits)
        target = tf.constant([1.0 - self.skip_target, self.skip_target])
        return tf.reduce_sum(p * tf.math.log(p / target), axis=[1, 2])


class MicroController(Controller):
    """The policy over ENAS micro architectures (a normal and a reduction cell)."""

    def __init__(self, lstm_size=64, tanh_constant=1.1, op_tanh_reduce=2.5, temperature=None, seed=0):
        super().__init__(lstm_size, tanh_constant, temperature, seed)
        self.op_tanh = tanh_constant / op_tanh_reduce
        num_ops = len(enas_micro.OPS)
        self.op_logits = self.dense(num_ops, "op_logits", bias=MICRO_OP_BIAS)
        self.op_embedding = keras.layers.Embedding(num_ops, lstm_size, embeddings_initializer=self.uniform(),
                                                   name="op_embedding")

    def run_policy(self, rollout, batch_size):
        state, _ = self.initial_state(batch_size)
        for cell_index, cell in enumerate(enas_micro.CELLS):
            fixed_bias = tf.constant(MICRO_NORMAL_FIXED_BIAS) if cell == "normal" else 0.0
            state = self.sample_cell(rollout, state, batch_size, cell_index * enas_micro.CELL_LENGTH, fixed_bias)
        return rollout.result()

    def sample_cell(self, rollout, state, batch_size, offset, fixed_bias):
        start = tf.tile(self.start, [batch_size, 1])
        anchors, keys = [], []
        for _ in range(2):  # the cell's two inputs: keys from the LSTM, zero values
            h, state = self.cell(start, state)
            anchors.append(tf.zeros_like(h))
            keys.append(self.attend_anchor(h))
        inputs = start
        for node in range(enas_micro.NUM_NODES):
            position = offset + 4 * node
            for slot in range(2):
                h, state = self.cell(inputs, state)
                index = rollout.choose(self.squash(self.attention(keys, h)), position + 2 * slot)
                inputs = tf.gather(tf.stack(anchors, axis=1), index, batch_dims=1)
            for slot in range(2):
                h, state = self.cell(inputs, state)
                logits = self.squash(self.op_logits(h), self.op_tanh) + fixed_bias
                inputs = self.op_embedding(rollout.choose(logits, position + 2 * slot + 1))
            h, state = self.cell(inputs, state)
            anchors.append(h)
            keys.append(self.attend_anchor(h))
            inputs = start
        return state
