"""Datasets: original-file readers, sources (embedded, local folder, tfds) and tf.data pipelines."""
from scas_tf.data.pipeline import Splits, eval_dataset, limit_images, load_splits, steps_per_epoch, train_dataset
from scas_tf.data.sources import DATASETS, dataset_info
