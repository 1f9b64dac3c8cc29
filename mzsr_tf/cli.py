"""Shared command-line plumbing: one-line errors and exit codes (STYLE: raise with one clear line)."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading

from mzsr_tf.errors import TERMINATION, Terminated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tensorflow_quietly():
    """Import TF with native stderr muted: its CUDA stub loader logs before any log level applies."""
    if "tensorflow" in sys.modules or os.environ.get("MZSR_TF_VERBOSE"):
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_import_tensorflow_quietly()


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line and exit code 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _terminate(signum, frame):
    TERMINATION.set()
    raise Terminated


def run(main, argv=None) -> int:
    """Call ``main(argv)``; turn InputError/ValueError into ``error: ...`` on stderr and exit code 2.

    Ctrl-C (SIGINT) and SIGTERM unwind the call (cleaning up what it was writing) and exit 130 / 143.
    """
    from mzsr_tf.errors import InputError, TrainingStopped

    previous = None
    if threading.current_thread() is threading.main_thread():
        TERMINATION.clear()
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return main(argv) or 0
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2, already reported)
        return e.code if isinstance(e.code, int) else 2
    except (InputError, ValueError) as e:
        sys.stderr.write(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}\n")
        return 2
    except TrainingStopped as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    except Terminated:
        sys.stderr.write("terminated\n")
        return 143
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def bounded_int(low: int, high: int | None = None):
    """argparse type: an integer ``>= low`` (and ``<= high``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    return parse


def scale_type(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"scale must be an integer > 1, got {text}")
    return int(value)


def float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not (0 < v < math.inf) for v in values):
        raise argparse.ArgumentTypeError(f"learning rates must be positive and finite, got {text!r}")
    return values


def son_noise(text: str):
    """argparse type: 'auto' (the photo's own noise level) or a σ in 0-255 units, returned in [0, 1] units."""
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value / 255.0
