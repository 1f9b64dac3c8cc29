"""Exceptions the CLIs turn into a one-line error and a non-zero exit code."""

import threading


class InputError(ValueError):
    """Bad user input: unreadable file, invalid kernel, image too small, bad flag (exit code 2)."""


class TrainingStopped(RuntimeError):
    """Training cannot go on, e.g. too many non-finite steps in a row (exit code 1)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` (temporary files, staging folders) runs (exit code 143)."""


TERMINATION = threading.Event()  # set by the CLIs' SIGTERM handler, cleared when a CLI call starts


def raise_if_terminated() -> None:
    """Raise :class:`Terminated` if a SIGTERM has come during this CLI call, also one whose exception native code
    swallowed (a signal that lands inside a C++ library call can be lost there): called before a result is moved
    into place, so a terminated run publishes nothing."""
    if TERMINATION.is_set():
        raise Terminated
