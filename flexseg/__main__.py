"""`python -m flexseg <command> [overrides]`: the same as `flexseg-<command> [overrides]`."""

from flexseg.commands import main

if __name__ == "__main__":
    main()
