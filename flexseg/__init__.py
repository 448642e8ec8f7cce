"""flexseg: image segmentation training on Keras 3 (TensorFlow, JAX or PyTorch)."""

import os

# TensorFlow's C++ start-up banner (CPU features, CUDA probing) drowns the useful output;
# a user who wants it sets TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
