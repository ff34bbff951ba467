"""Jobs started from a notebook session: handles shown as cards, their state and logs."""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, did_you_mean
from ..manifest import RUNNING

if TYPE_CHECKING:
    from ..backends.base import JobHandle
    from ..result import RunResult

log = logging.getLogger("batcat_nb")


class Job:
    """A job started from this session: the backend's handle, shown as a card.

    ``status()``, ``wait()``, ``logs()`` and ``cancel()`` are the handle's. A job started with
    ``--no-wait`` completes its MLflow run in the background as soon as it ends.
    """

    def __init__(self, handle: JobHandle, interval: float = 2.0) -> None:
        self.handle = handle
        self.interval = interval
        self.result: RunResult | None = None
        self._waiter: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:  # anything else the handle offers
        if name in ("handle", "result"):
            raise AttributeError(name)
        return getattr(self.handle, name)

    @property
    def job_name(self) -> str:
        return self.handle.job_name

    def status(self) -> str:
        """RUNNING, FINISHED, FAILED or KILLED."""
        return self.result.status if self.result is not None else self.handle.status()

    def logs(self) -> str:
        return self.handle.logs()

    def cancel(self, reason: str = "cancelled") -> None:
        self.handle.cancel(reason)

    def wait(self, timeout: float | None = None) -> RunResult:
        """Wait for the end and return the RunResult (its MLflow run completed)."""
        if self._waiter is not None:
            self._waiter.join(timeout)
            if self._waiter.is_alive():
                raise TimeoutError(f"{self.job_name} still {RUNNING} after {timeout}s")
        if self.result is None:  # no waiter, or it failed: wait here and show why
            self.result = self.handle.wait(timeout)
        return self.result

    def complete_in_background(self) -> None:
        """Complete the MLflow run when the job ends, even if nobody calls ``wait()``."""

        def complete() -> None:
            try:
                self.result = self.handle.wait()
            except Exception as exc:  # wait() in the foreground raises it again
                log.debug("%s: background completion failed: %s", self.job_name, exc)

        self._waiter = threading.Thread(target=complete, name=f"batcat-{self.job_name}", daemon=True)
        self._waiter.start()

    def follow(self) -> RunResult:
        """Wait in the foreground (Ctrl-C stops the job, as api.run does); remote jobs show their state."""
        from .. import api

        spec = self.handle.spec
        line = (
            StateLine(self.handle, self.interval)
            if spec.progress and not _own_progress(self.handle)
            else None
        )
        try:
            self.result = api.wait(self.handle)
        finally:
            if line is not None:
                line.stop(self.result.status if self.result is not None else None)
        return self.result

    def rows(self) -> list[tuple[str, str]]:
        spec = self.handle.spec
        rows = [("status", self.status()), ("backend", spec.backend), ("experiment", spec.experiment)]
        if spec.run_id:
            rows.append(("mlflow run", f"{spec.run_id} (experiment {spec.experiment_id})"))
        rows.append(("output", spec.output_dir))
        name = self.job_name
        rows.append(("next", f"job.wait()   %batcat_logs {name} --follow   %batcat_stop {name}"))
        return rows

    def __str__(self) -> str:
        if self.result is not None:
            return str(self.result)
        return f"{self.job_name}\n{text_rows(self.rows())}"

    def __repr__(self) -> str:
        return f"<batcat job {self.job_name} {self.status()}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        if self.result is not None:
            return self.result._repr_html_()
        rows = self.rows()
        return (
            f"<div class='batcat-job'><b>{html.escape(rows[0][1])}</b> "
            f"<code>{html.escape(self.job_name)}</code>{html_rows(rows[1:])}</div>"
        )


class StateLine:
    """A line under the cell with a remote job's state, updated in place while the run waits.

    The state is the handle's ``state()`` when it has one (the service's own words: SageMaker's
    Staging, InProgress, Stopping), polled every ``interval`` seconds; else RUNNING until the end.
    The job's log lines are the backend's to show (they echo them while ``wait()`` runs).
    """

    def __init__(self, handle: JobHandle, interval: float) -> None:
        from IPython.display import display

        self.job_name, self.backend = handle.job_name, handle.spec.backend
        self.since = datetime.now().strftime("%H:%M:%S")
        self.state = RUNNING
        self._display = display(self, display_id=True)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        state = getattr(handle, "state", None)
        if callable(state):
            self._ticker = threading.Thread(target=self._tick, args=(state, interval), daemon=True)
            self._ticker.start()

    def _tick(self, state: Callable[[], str], interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._show(str(state()))
            except Exception as exc:  # a failed look is no reason to stop waiting
                log.debug("%s: no state: %s", self.job_name, exc)

    def _show(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self._display is not None:
                self._display.update(self)

    def stop(self, final: str | None) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if final:
            self._show(final)

    def __repr__(self) -> str:
        return f"{self.job_name}: {self.state} on {self.backend} (since {self.since})"

    def _repr_html_(self) -> str:
        return (
            f"<div class='batcat-state'><b>{html.escape(self.state)}</b> <code>{html.escape(self.job_name)}"
            f"</code> on {html.escape(self.backend)}, since {self.since}</div>"
        )


class SkippedRun:
    """What ``%batcat_run`` returns inside a batch job: nothing ran, and ``wait()`` is harmless."""

    def __init__(self, in_job: str) -> None:
        self.in_job = in_job

    def status(self) -> str:
        return "SKIPPED"

    def wait(self, timeout: float | None = None) -> SkippedRun:
        return self

    def logs(self) -> str:
        return ""

    def cancel(self, reason: str = "") -> None:
        """Nothing to stop."""

    def __repr__(self) -> str:
        return f"<batcat: %batcat_run skipped inside the batch job {self.in_job}>"


class Jobs:
    """The jobs this IPython session started, by name; the last one is the default.

    A job started elsewhere (another session, the CLI) is not found yet: a backend that can
    re-attach to a job by name (SageMaker) will plug in at ``_find_elsewhere``.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def add(self, handle: JobHandle, interval: float = 2.0) -> Job:
        job = Job(handle, interval)
        self._jobs[handle.job_name] = job
        return job

    def __len__(self) -> int:
        return len(self._jobs)

    def experiments(self) -> list[str]:
        """The experiments of this session's jobs, most recent first."""
        names = [job.handle.spec.experiment for job in reversed(self._jobs.values())]
        return list(dict.fromkeys(names))

    def get(self, name: str | None) -> Job:
        """A job by name, MLflow run id or unique prefix of its name; None: the last one."""
        if name is None:
            if not self._jobs:
                raise UsageError(
                    "no job started in this session yet (%batcat_run NOTEBOOK --no-wait starts one)"
                )
            return list(self._jobs.values())[-1]
        if name in self._jobs:
            return self._jobs[name]
        by_run = [job for job in self._jobs.values() if job.handle.spec.run_id == name]
        by_prefix = [job for job_name, job in self._jobs.items() if job_name.startswith(name)]
        for found in (by_run, by_prefix):
            if len(found) == 1:
                return found[0]
        known = ", ".join(self._jobs) or "none yet"
        raise UsageError(f"no job '{name}' in this session{did_you_mean(name, self._jobs)}; jobs: {known}")


def _own_progress(handle: JobHandle) -> bool:
    """Whether the handle shows the job's progress itself (the local worker's cell-by-cell bar)."""
    return handle.shows_progress


def follow_logs(job: Job, interval: float) -> None:
    """Print the job's log, then what it adds, until it ends; Ctrl-C stops following only."""
    shown = 0
    try:
        while True:
            running = job.status() == RUNNING  # read after: the last lines are never missed
            text = job.logs()
            print(text[shown:], end="", flush=True)
            shown = len(text)
            if not running:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        print(f"\n(stopped following; {job.job_name} goes on)")


def text_rows(rows: list[tuple[str, str]]) -> str:
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


def html_rows(rows: list[tuple[str, str]]) -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
        f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
        for label, value in rows
    )
    return f"<table>{body}</table>"
