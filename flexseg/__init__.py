"""flexseg: image segmentation training on Keras 3 (TensorFlow, JAX or PyTorch).

Importing it changes nothing in the process; the commands call
`flexseg.runtime.prepare_process()` first.
"""

__version__ = "0.1.0"
