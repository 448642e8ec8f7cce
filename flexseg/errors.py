"""Errors that tell a user what is wrong, where, and how to fix it."""


class DataError(ValueError):
    """A problem with input data: the message names the file or folder and the fix."""


class ConfigError(ValueError):
    """A problem with a configuration value: the message names the key and the fix."""
