"""`python -m flexseg.train`: the same as `flexseg-train`."""

from flexseg.cli import train

if __name__ == "__main__":
    train()
