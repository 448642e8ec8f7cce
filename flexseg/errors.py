"""Errors that tell a user what is wrong, where, and how to fix it."""


class DataError(ValueError):
    """A problem with input data: the message names the file or folder and the fix."""


class ConfigError(ValueError):
    """A problem with a configuration value: the message names the key and the fix."""


class TrainingError(RuntimeError):
    """Training could not go on (e.g. the loss became NaN); the message says where and why."""


class PreemptedError(RuntimeError):
    """Training was stopped by a signal (SIGTERM, SIGUSR1) at a batch boundary; it can resume."""
