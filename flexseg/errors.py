"""Every error flexseg raises on purpose: each tells a user what is wrong, where, and the fix.

Commands turn them into one line on stderr and the error's `exit_code`, never a traceback.
"""

from __future__ import annotations

MAX_LISTED = 25  # problems a PreflightError prints; the rest are counted


class DataError(ValueError):
    """A problem with input data: the message names the file or folder and the fix."""

    exit_code = 2


class ConfigError(ValueError):
    """A problem with a configuration value: the message names the key and the fix."""

    exit_code = 2


class PreflightError(DataError):
    """A check before any compute found problems; the message lists them, one per line.

    Args:
        problems: one line per problem, each naming the file or key.
        outcome: what did not happen because of them, e.g. "nothing was trained".
    """

    def __init__(self, problems: list[str], outcome: str | None = None):
        self.problems = list(dict.fromkeys(problems))  # each once, in the order found
        lines = [f"  - {p}" for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED} more")
        head = f"the pre-flight check found {len(self.problems)} problem(s)"
        super().__init__(head + (f"; {outcome}" if outcome else "") + ":\n" + "\n".join(lines))


class TrainingError(RuntimeError):
    """Training could not go on (e.g. the loss became NaN); the message says where and why."""

    exit_code = 2


class ExportError(RuntimeError):
    """An exported model could not be written or does not match the Keras model; the message
    says which format and by how much, and nothing of the export is left behind."""

    exit_code = 2


class PreemptedError(RuntimeError):
    """Training was stopped by a signal (SIGTERM, SIGUSR1) at a batch boundary; it can resume."""

    exit_code = 3
