"""REINFORCE with a moving-average baseline: the controller update of ENAS (and SCAS-ENAS).

As the reference (`build_trainer` of both controllers, with SyncReplicasOptimizer aggregating
`num_aggregate` sampled architectures per step): for each architecture k of a batch, in order,
    reward R_k = validation accuracy + entropy_weight * policy entropy
    baseline b_k = b_{k-1} - (1 - decay) * (b_{k-1} - R_k)   (updated before it is used)
    loss_k = -log pi(a_k) * (R_k - b_k) + skip_weight * skip penalty (macro: a mean over layers)
and one Adam step (beta_1 = 0, epsilon 1e-3) on the mean of the batch's losses.
"""
import tensorflow as tf
import tf_keras as keras


def sequential_baselines(baseline, rewards, decay):
    """The baseline after each reward of the batch, applied one by one."""
    return tf.scan(lambda b, r: b - (1.0 - decay) * (b - r), rewards, initializer=baseline)


class Reinforce:
    def __init__(self, controller, learning_rate=1e-3, baseline_decay=0.99, entropy_weight=1e-4,
                 skip_weight=0.0):
        self.controller = controller
        self.baseline_decay, self.entropy_weight, self.skip_weight = baseline_decay, entropy_weight, skip_weight
        self.optimizer = keras.optimizers.Adam(learning_rate, beta_1=0.0, epsilon=1e-3)
        self.baseline = tf.Variable(0.0, trainable=False, name="baseline")

    @tf.function
    def update(self, actions, accuracies):
        """One gradient step on the policy from a batch of sampled architectures' rewards."""
        variables = self.controller.trainable_variables
        with tf.GradientTape() as tape:
            log_prob, entropy, skip_kl = self.controller.score(actions)
            rewards = accuracies + self.entropy_weight * tf.stop_gradient(entropy)
            baselines = sequential_baselines(self.baseline, rewards, self.baseline_decay)
            advantages = rewards - baselines
            loss = tf.reduce_mean(-log_prob * advantages + self.skip_weight * skip_kl)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.baseline.assign(baselines[-1])
        return {"loss": loss, "reward": tf.reduce_mean(rewards), "baseline": self.baseline.read_value(),
                "entropy": tf.reduce_mean(entropy), "skip_kl": tf.reduce_mean(skip_kl)}
