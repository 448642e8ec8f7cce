"""`python -m flexseg.check`: the same as `flexseg-check`."""

from flexseg.cli import check

if __name__ == "__main__":
    check()
