"""ENAS's controller: an LSTM policy that samples an architecture one decision at a time.

A search space describes its decision sequence as a list of `spaces.Decision`s; the policy
turns it into an integer action sequence equal to the space's text encoding. Three kinds of
decision, as in the reference implementation:
* "op": a categorical over a fixed op list (logits from a head shared per op_group; the
  chosen op's embedding is the next LSTM input);
* "input": a categorical over the current anchors (earlier LSTM outputs), scored by
  additive attention; the chosen anchor is the next input;
* "skips": one Bernoulli bit per anchor, scored by the same attention; the mean of the chosen
  anchors is the next input.
Logits are divided by the temperature and squashed with `tanh_constant * tanh(.)`. The same
code samples (actions=None) and scores given actions (teacher forcing) for REINFORCE.
"""
import tensorflow as tf
import tf_keras as keras


class Controller(keras.Model):
    """LSTM policy over a fixed decision sequence; batched over architectures."""

    def __init__(self, decisions, lstm_size=64, tanh_constant=1.5, op_tanh_reduce=1.0,
                 temperature=None, skip_target=0.4, seed=0):
        super().__init__(name="controller")
        self.decisions = list(decisions)
        self.num_actions = sum(d.size if d.kind == "skips" else 1 for d in self.decisions)
        self.tanh_constant, self.op_tanh_reduce = tanh_constant, op_tanh_reduce
        self.temperature, self.skip_target = temperature, skip_target
        init = keras.initializers.RandomUniform(-0.1, 0.1, seed=seed)
        self.cell = keras.layers.LSTMCell(lstm_size, kernel_initializer=init,
                                          recurrent_initializer=init)
        self.start = self.add_weight("start", [1, lstm_size], initializer=init)
        op_groups = {d.op_group: d.size for d in self.decisions if d.kind == "op"}
        self.op_logits = {g: keras.layers.Dense(n, use_bias=False, kernel_initializer=init,
                                                name=f"op_logits_{g}") for g, n in op_groups.items()}
        self.op_embedding = {g: keras.layers.Embedding(n, lstm_size, embeddings_initializer=init,
                                                       name=f"op_embedding_{g}")
                             for g, n in op_groups.items()}
        self.attend_anchor = keras.layers.Dense(lstm_size, use_bias=False, kernel_initializer=init)
        self.attend_query = keras.layers.Dense(lstm_size, use_bias=False, kernel_initializer=init)
        self.attend_score = keras.layers.Dense(1, use_bias=False, kernel_initializer=init)
        self.rng = tf.random.Generator.from_seed(seed)

    def squash(self, logits, reduce=1.0):
        if self.temperature:
            logits = logits / self.temperature
        return self.tanh_constant / reduce * tf.tanh(logits)

    def attention_logits(self, anchors, h):
        keys = self.attend_anchor(tf.stack(anchors, axis=1))  # [B, n, H]
        return self.squash(self.attend_score(tf.tanh(keys + self.attend_query(h)[:, None]))[..., 0])

    def choose_categorical(self, logits, forced):
        if forced is None:
            gumbel = -tf.math.log(-tf.math.log(self.rng.uniform(tf.shape(logits), 1e-20, 1.0)))
            forced = tf.argmax(logits + gumbel, axis=-1, output_type=tf.int32)
        log_p = tf.nn.log_softmax(logits)
        chosen_log_p = tf.gather(log_p, forced, batch_dims=1)
        entropy = -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)
        return forced, chosen_log_p, entropy

    def choose_bits(self, logits, forced):
        if forced is None:
            forced = tf.cast(self.rng.uniform(tf.shape(logits)) < tf.sigmoid(logits), tf.int32)
        bits = tf.cast(forced, tf.float32)
        log_on, log_off = tf.math.log_sigmoid(logits), tf.math.log_sigmoid(-logits)
        chosen_log_p = tf.reduce_sum(bits * log_on + (1 - bits) * log_off, axis=-1)
        p = tf.sigmoid(logits)
        entropy = -tf.reduce_sum(p * log_on + (1 - p) * log_off, axis=-1)
        t = self.skip_target
        kl = tf.reduce_sum(p * (log_on - tf.math.log(t)) + (1 - p) * (log_off - tf.math.log(1 - t)), axis=-1)
        return forced, chosen_log_p, entropy, kl

    def sample(self, batch_size):
        """Samples architectures: (actions [B, num_actions] int32, log_prob, entropy, skip_kl)."""
        return self.run_policy(batch_size, None)

    def score(self, actions):
        """Log-probability, entropy and skip KL [B] of given actions, differentiably."""
        return self.run_policy(tf.shape(actions)[0], actions)[1:]

    def run_policy(self, batch_size, actions):
        state = [tf.zeros([batch_size, self.cell.units])] * 2
        inputs = tf.tile(self.start, [batch_size, 1])
        anchors, chosen, log_prob, entropy, skip_kl = [], [], 0.0, 0.0, 0.0
        position = 0
        for d in self.decisions:
            if d.new_group:
                anchors = []
                for _ in range(d.new_group):
                    h, state = self.cell(inputs, state)
                    anchors.append(h)
            h, state = self.cell(inputs, state)
            width = d.size if d.kind == "skips" else 1
            forced = None if actions is None else actions[:, position:position + width]
            position += width
            if d.kind == "op":
                logits = self.squash(self.op_logits[d.op_group](h), self.op_tanh_reduce)
                action, lp, ent = self.choose_categorical(logits, None if forced is None else forced[:, 0])
                inputs = self.op_embedding[d.op_group](action)
                chosen.append(action[:, None])
            elif d.kind == "input":
                logits = self.attention_logits(anchors, h)
                action, lp, ent = self.choose_categorical(logits, None if forced is None else forced[:, 0])
                inputs = tf.gather(tf.stack(anchors, axis=1), action, batch_dims=1)
                chosen.append(action[:, None])
            elif d.size:  # skips over the anchors so far
                logits = self.attention_logits(anchors, h)
                bits, lp, ent, kl = self.choose_bits(logits, forced)
                skip_kl += kl
                weights = tf.cast(bits, tf.float32)[:, :, None]
                inputs = tf.reduce_sum(weights * tf.stack(anchors, axis=1), axis=1) / (
                    1.0 + tf.reduce_sum(weights, axis=1))
                chosen.append(bits)
            else:  # the first layer has no earlier layer to skip from
                lp = ent = 0.0
            log_prob += lp
            entropy += ent
            if d.add_anchor:
                anchors.append(h)
        return tf.concat(chosen, axis=1), log_prob, entropy, skip_kl * tf.ones([batch_size])
