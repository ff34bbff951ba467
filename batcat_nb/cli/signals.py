"""SIGTERM and SIGHUP (``kill``, a closed terminal) stop ``batcat`` as Ctrl-C does.

The job is stopped, its partial notebook kept and its run marked KILLED with the signal as
the reason; the command then exits 128 + the signal's number, as a shell reports a process
ended by that signal and as Docker reports a container stopped by it (130 for Ctrl-C, 143
for SIGTERM, 129 for SIGHUP), so scripts and supervisors see why it ended.
"""

from __future__ import annotations

import signal
from typing import Any

from ..result import Stopped
from .exit_codes import EXIT_INTERRUPTED

_received: list[int] = []


def install() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)


def _stop(signum: int, _frame: Any) -> None:
    first = not _received
    _received.append(signum)
    if first:  # the stop is under way; another signal must not break it off
        raise Stopped(signal.Signals(signum).name)


def exit_code() -> int:
    """128 + the first signal received, else Ctrl-C's 130."""
    return 128 + _received[0] if _received else EXIT_INTERRUPTED
