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
from typing import Any

from ...layout import ML_ROOT_ENV, JobLayout

_STOP = None


class WorkerPool:
    """``size`` serve-mode workers fed from one queue of jobs."""

    def __init__(self, size: int, log_path: Path) -> None:
        self._jobs: queue.Queue[tuple[str, dict[str, Any], Future[int]] | None] = queue.Queue()
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._waiting: dict[str, Future[int]] = {}  # queued, not yet taken by a worker
        self._lock = threading.Lock()
        self._log = log_path.open("ab")
        self._processes: list[subprocess.Popen[bytes]] = []
        self._feeders: list[threading.Thread] = []
        self.grow(size)

    def grow(self, size: int) -> None:
        """Have at least ``size`` workers."""
        with self._lock:
            while len(self._processes) < size:
                process = self._start_worker()
                feeder = threading.Thread(target=self._feed, args=(process,), daemon=True)
                feeder.start()
                self._processes.append(process)
                self._feeders.append(feeder)

    def _start_worker(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "batcat_nb.worker", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={k: v for k, v in os.environ.items() if k != ML_ROOT_ENV},
            start_new_session=True,
        )

    def dispatch(self, root: Path, env: dict[str, str], replace_env: bool = False) -> Future[int]:
        """Queue the job laid out at ``root``; the future resolves to the worker's exit code, or
        to -1 when the job is stopped before a worker takes it.

        ``env`` reaches the job's kernel; with ``replace_env`` it is the kernel's whole environment.
        """
        future: Future[int] = Future()
        with self._lock:
            if JobLayout(root).stop_file.exists():  # stopped before it was even queued
                future.set_result(-1)
                return future
            self._waiting[str(root)] = future
        self._jobs.put((str(root), {"env": env, "replace_env": replace_env}, future))
        return future

    def stop(self, root: Path) -> None:
        """Stop one job: a queued one at once (its future resolves to -1); a running one with its
        stop file, then SIGTERM to its worker (the job ends KILLED, the worker goes on)."""
        with self._lock:
            process = self._running.get(str(root))
            queued = self._waiting.pop(str(root), None) if process is None else None
            if queued is None:
                try:
                    JobLayout(root).stop_file.touch()  # also for a job not dispatched yet
                except OSError:
                    return  # the job has ended and its directory is gone
        if queued is not None:
            queued.set_result(-1)
        elif process is not None and process.poll() is None:
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
        while (item := self._jobs.get()) is not _STOP:
            root, options, future = item
            if process.poll() is not None:  # it died between jobs: this job goes to a new one
                process = self._replace(process)
            with self._lock:
                if self._waiting.pop(root, None) is None:
                    continue  # stopped while queued: its future is resolved
                self._running[root] = process
            try:
                exit_code = _ask(process, {"root": root, **options})
            except (OSError, ValueError) as exc:
                process = self._replace(process)  # the next jobs get a live worker
                future.set_exception(exc)
            else:
                future.set_result(exit_code)
            finally:
                with self._lock:
                    self._running.pop(root, None)

    def _replace(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """A worker that died or broke off a job (killed, out of memory): end it, start another."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        replacement = self._start_worker()
        with self._lock:
            self._processes[self._processes.index(process)] = replacement
        return replacement


def _ask(process: subprocess.Popen[bytes], request: dict[str, Any]) -> int:
    """Send one job to a serve-mode worker; its exit code once the job is done."""
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write((json.dumps(request) + "\n").encode())
    process.stdin.flush()
    reply = process.stdout.readline()
    if not reply:
        code = process.wait()
        raise OSError(f"its worker process ended (exit code {code}) before the job did")
    return int(json.loads(reply)["exit"])
