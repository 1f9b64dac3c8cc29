"""Exceptions the CLIs turn into a one-line error and a non-zero exit code."""


class InputError(ValueError):
    """Bad user input: unreadable file, invalid kernel, image too small, bad flag (exit code 2)."""


class TrainingStopped(RuntimeError):
    """Training cannot go on, e.g. too many non-finite steps in a row (exit code 1)."""
