"""scas_tf: Sparse CNN Architecture Search (SCAS) in TensorFlow.

tfmot 0.8 only works with Keras 2, so the package selects tf-keras before anything
imports TensorFlow; users never have to set the variable themselves.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
