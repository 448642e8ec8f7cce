"""`python -m flexseg.infer`: the same as `flexseg-infer`."""

from flexseg.cli import infer

if __name__ == "__main__":
    infer()
