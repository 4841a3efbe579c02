"""REINFORCE with a moving-average baseline: the controller update of ENAS (and SCAS-ENAS).

As in the reference: reward = validation accuracy + entropy_weight * policy entropy; loss =
-log pi(a) * (reward - baseline) [+ skip_weight * KL(skip probabilities || skip_target)];
baseline <- baseline - (1 - decay) * (baseline - reward); Adam with beta_1 = 0, epsilon 1e-3.
"""
import tensorflow as tf
import tf_keras as keras


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
            advantages = rewards - self.baseline
            loss = -tf.reduce_mean(log_prob * advantages) + self.skip_weight * tf.reduce_mean(skip_kl)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.baseline.assign_sub((1.0 - self.baseline_decay) * (self.baseline - tf.reduce_mean(rewards)))
        return {"loss": loss, "reward": tf.reduce_mean(rewards), "baseline": self.baseline.read_value(),
                "entropy": tf.reduce_mean(entropy), "skip_kl": tf.reduce_mean(skip_kl)}
