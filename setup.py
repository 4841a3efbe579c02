"""scas_tf: Sparse CNN Architecture Search in TensorFlow (pip install -e .[test])."""
from setuptools import find_packages, setup

setup(
    name="scas_tf",
    version="0.1.0",
    description="Sparse CNN Architecture Search (SCAS): ENAS, DARTS and SMASH with gradual magnitude pruning",
    python_requires=">=3.9,<3.13",
    packages=find_packages(include=["scas_tf", "scas_tf.*"]),
    install_requires=[
        # tfmot 0.8 needs Keras 2 (tf-keras) of the same minor version as TensorFlow.
        "tensorflow>=2.16,<2.22",
        "tf-keras>=2.16,<2.22",
        "tensorflow-model-optimization>=0.8.0,<0.9",
        "tensorflow-datasets>=4.9,<5",
        "numpy>=1.23,<3",
        "absl-py>=1.0",
        "tensorboard>=2.16",  # tf.summary writers; TensorFlow 2.21 no longer depends on it
        "setuptools",  # tfmot imports distutils, gone from the standard library in Python 3.12
    ],
    extras_require={
        "report": ["matplotlib>=3.5"],  # scas report's figures
        "export": ["ai-edge-litert>=2.0"],  # scas export's interpreter (tf.lite.Interpreter is deprecated)
        "test": ["pytest>=7", "matplotlib>=3.5", "nbclient>=0.7", "nbformat>=5", "ipykernel>=6", "ai-edge-litert>=2.0"],
    },
    entry_points={"console_scripts": ["scas=scas_tf.console:main"]},
)
