"""`python -m flexseg.stats`: the same as `flexseg-stats`."""

from flexseg.cli import stats

if __name__ == "__main__":
    stats()
