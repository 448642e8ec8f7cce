"""`python -m flexseg.evaluate`: the same as `flexseg-evaluate`."""

from flexseg.cli import evaluate

if __name__ == "__main__":
    evaluate()
