"""Model builders: shared prunable blocks and the hand-designed baselines."""
from scas_tf.models.baselines import ARCHITECTURES, build_baseline
