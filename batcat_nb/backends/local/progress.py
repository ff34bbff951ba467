"""A local job's cell-by-cell progress, drawn by the launcher from the worker's progress file.

The worker rewrites ``<cells done> <cells>`` after each cell (``JobLayout.progress_file``); the
bar is drawn here, in the process the user watches, so that in Jupyter it is a widget rather
than a worker's text bar copied as stderr.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...progress import progress_bar

POLL_SECONDS = 0.2


class CellProgress:
    """Follows one job's progress file until ``wait`` reports the job ended."""

    def __init__(self, progress_file: Path, wait: Callable[[float], bool]) -> None:
        self.progress_file, self.wait = progress_file, wait
        self.thread = threading.Thread(target=self._follow, daemon=True, name="batcat-progress")
        self.thread.start()

    def _follow(self) -> None:
        bar: Any = None
        while True:
            ended = self.wait(POLL_SECONDS)
            done, total = _read(self.progress_file)
            if total:
                if bar is None:
                    bar = progress_bar(total, "Executing", "cell")
                bar.update(done - bar.n)
            if ended:
                break
        if bar is not None:
            bar.close()

    def join(self) -> None:
        self.thread.join()


def _read(path: Path) -> tuple[int, int]:
    try:
        done, total = path.read_text().split()
        return int(done), int(total)
    except (OSError, ValueError):
        return 0, 0
