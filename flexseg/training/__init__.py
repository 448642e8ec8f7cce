"""Training: train(cfg) and its callbacks."""

from flexseg.training.train import train

__all__ = ["train"]
