"""Our output is ours: third-party chatter (converter logs, C++ runtime notices, warnings
with source lines) is hidden unless the user asks with ``--verbose`` / FFEDGE_VERBOSE=1."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator


def verbose_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("FFEDGE_VERBOSE", "") not in ("", "0")


@contextlib.contextmanager
def quiet_unless_verbose(verbose: bool = False, stdout: bool = False) -> Iterator[None]:
    """Silence Python warnings, library loggers and, when stderr is the process's fd 2,
    everything C/C++ code writes there; our own lines (``sys.stderr``) still show.

    ``stdout``: also hide what Python code prints to ``sys.stdout`` inside the block (NNCF's
    rich progress bars) -- for blocks whose own results are printed after it (exports)."""
    if verbose_requested(verbose):
        os.environ["FFEDGE_VERBOSE"] = "1"
        yield
        return
    for var, value in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("GLOG_minloglevel", "2"),
                       ("ORT_LOGGING_LEVEL", "3")):
        os.environ.setdefault(var, value)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    with warnings.catch_warnings(), _native_stderr_hidden(), _python_stdout_hidden(stdout):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            root.setLevel(level)


@contextlib.contextmanager
def _python_stdout_hidden(hide: bool) -> Iterator[None]:
    if not hide:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


@contextlib.contextmanager
def _native_stderr_hidden() -> Iterator[None]:
    """Point fd 2 at /dev/null while ``sys.stderr`` keeps writing to the real terminal."""
    try:
        real = sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    ours = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    previous = sys.stderr
    os.dup2(devnull, 2)
    sys.stderr = ours
    try:
        yield
    finally:
        ours.flush()
        os.dup2(saved, 2)
        sys.stderr = previous
        for fd in (saved, devnull):
            os.close(fd)
        ours.close()
