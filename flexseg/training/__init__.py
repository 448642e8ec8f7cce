"""Training: `train(cfg, run_dir)`, the plan it checks first, its setup and callbacks."""

from flexseg.training.plan import Plan, make_plan
from flexseg.training.train import train

__all__ = ["Plan", "make_plan", "train"]
