"""Warm local workers for many jobs: each serves jobs one after another, in fresh kernels.

A ``python -m batcat_nb.worker --serve`` process imports papermill once and starts the next
job's kernel while the current job runs; jobs still never share a kernel.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import IO

from ..layout import ML_ROOT_ENV

_STOP = None


class WorkerPool:
    """``size`` serve-mode workers fed from one queue of jobs."""

    def __init__(self, size: int, log_path: Path) -> None:
        self._jobs: queue.Queue[tuple[str, dict[str, str], Future[int]] | None] = queue.Queue()
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._log = log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if k != ML_ROOT_ENV}
        self._processes = [
            subprocess.Popen(
                [sys.executable, "-m", "batcat_nb.worker", "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                env=env,
                start_new_session=True,
            )
            for _ in range(size)
        ]
        self._feeders = [
            threading.Thread(target=self._feed, args=(process,), daemon=True) for process in self._processes
        ]
        for feeder in self._feeders:
            feeder.start()

    def dispatch(self, root: Path, env: dict[str, str]) -> Future[int]:
        """Queue the job laid out at ``root``; the future resolves to the worker's exit code."""
        future: Future[int] = Future()
        self._jobs.put((str(root), env, future))
        return future

    def stop(self, root: Path) -> None:
        """Stop one job: SIGTERM to the worker running it (it ends KILLED, the worker goes on)."""
        with self._lock:
            process = self._running.get(str(root))
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Let the workers finish what they run, then end them."""
        for _ in self._processes:
            self._jobs.put(_STOP)
        for feeder in self._feeders:
            feeder.join()
        for process in self._processes:
            if process.stdin:
                process.stdin.close()
            process.wait()
        self._log.close()

    def _feed(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        while (item := self._jobs.get()) is not _STOP:
            root, env, future = item
            if future.cancelled():
                continue
            with self._lock:
                self._running[root] = process
            try:
                future.set_result(_ask(process.stdin, process.stdout, root, env))
            except (OSError, ValueError) as exc:
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._running.pop(root, None)


def _ask(stdin: IO[bytes], stdout: IO[bytes], root: str, env: dict[str, str]) -> int:
    stdin.write((json.dumps({"root": root, "env": env}) + "\n").encode())
    stdin.flush()
    reply = stdout.readline()
    if not reply:
        raise OSError("the worker ended without an answer (see the sweep's log)")
    return int(json.loads(reply)["exit"])
