"""The Backend protocol and the handle every backend returns.

A backend's ``submit(spec)`` starts what it can at once (staging, a local process) and
returns a handle; ``handle.attach(tracker, run_id, experiment_id)`` hands it the MLflow run,
after which the job logs to it. ``wait()`` completes the run from the job's manifest.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from .. import lease, ui
from ..environment import Recorded
from ..manifest import FAILED, KILLED, RUNNING, Manifest
from ..result import RunResult
from ..spec import JobSpec
from ..tracking import Tracker
from ..worker import JOB_LOG_NAME

log = logging.getLogger("batcat_nb")


@dataclass
class RerunImage:
    """What ``batcat rerun`` asks of a backend's ``rerun_image`` hook."""

    run_id: str
    tags: dict[str, str]  # the original run's ({} when it ran on another backend)
    options: dict[str, Any]  # the backend options: recorded, then the caller's
    environment: Recorded | None  # --from-environment: build from the run's environment.txt
    scratch: Path  # a private directory, kept until the job has started


class Backend(Protocol):
    """Where jobs run.

    Optional hooks, which the core looks up by name and never by the backend's class:

    - ``detachable = True``: its jobs outlive the process that submitted them (``batcat submit``);
    - ``rerun_image(request: RerunImage) -> (options, tags)``: for ``batcat rerun``, the backend
      options that run the job in the image the original run ran in (from its tags), and tags for
      the new run; a backend that builds images may rebuild a missing one from unchanged inputs,
      or build one from ``request.environment``; it raises a UsageError when it cannot;
    - ``leased = True``: its jobs hold a lease beside their output on this machine, so that
      ``batcat runs reconcile`` completes a run whose launcher died; ``collect_orphan(output)``
      then first gathers what such a job left (False while it still runs);
    - ``tracker(uri) -> Tracker``: its own way to reach the MLflow store (the local agent);
    - ``concurrent(size, log_path)``: a context manager that readies ``size`` jobs at once
      (warm local workers for a sweep).
    """

    name: str

    def validate(self, spec: JobSpec) -> None:
        """Raise a UsageError for anything this backend cannot run, before anything starts."""

    def submit(self, spec: JobSpec) -> JobHandle:
        """Start the job (or what of it can start before its MLflow run exists)."""
        ...


class JobHandle(ABC):
    """A submitted job: ``status()``, ``wait()``, ``logs()``, ``cancel()``."""

    shows_progress = False  # True when the job draws its own progress bar here (the local worker)

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.tracker: Tracker | None = None
        self._result: RunResult | None = None
        self._cancel_reason: str | None = None
        self._completing = threading.Lock()
        self._lease: IO[bytes] | None = None  # held until the run is complete (batcat_nb.lease)

    @property
    def job_name(self) -> str:
        return self.spec.job_name

    def attach(self, tracker: Tracker, run_id: str, experiment_id: str) -> None:
        """Hand the job its MLflow run; from now on it may log to it."""
        self.tracker = tracker
        self.spec.run_id, self.spec.experiment_id = run_id, experiment_id
        self._on_attach()

    @abstractmethod
    def _on_attach(self) -> None:
        """Let the job learn its run (and start, for backends that wait for it)."""

    @abstractmethod
    def status(self) -> str:
        """RUNNING, FINISHED, FAILED or KILLED."""

    @abstractmethod
    def _wait_for_exit(self, timeout: float | None) -> bool:
        """Block until the job ends; False when ``timeout`` passed first."""

    @abstractmethod
    def _fetch_outputs(self) -> Path | None:
        """Bring the notebook output channel where the user wants it; return that directory."""

    @property
    def log_path(self) -> Path:
        """The job's log, kept beside its executed notebook (and logged with the run)."""
        return Path(self.spec.output_dir) / JOB_LOG_NAME

    def logs(self) -> str:
        """The job's log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @abstractmethod
    def _stop(self) -> None:
        """Ask the job to stop (SIGTERM or the service's stop call)."""

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the job; its run ends KILLED with ``reason`` and the partial notebook is kept."""
        self._cancel_reason = reason
        self._stop()

    def wait(self, timeout: float | None = None) -> RunResult:
        """Wait for the end, complete the MLflow run, and return the result."""
        if self._result is not None:
            return self._result
        if not self._wait_for_exit(timeout):
            raise TimeoutError(f"{self.job_name} still {RUNNING} after {timeout}s")
        with self._completing:  # one thread completes the run; the others get its result
            if self._result is None:
                try:
                    self._result = self._complete()
                finally:  # done, or the store is away: `batcat runs reconcile` may complete it
                    if self._lease is not None:
                        lease.release(self._lease, completed=self._result is not None)
                        self._lease = None
        return self._result

    def _complete(self) -> RunResult:
        output_dir = self._fetch_outputs()
        manifest = self._read_manifest(output_dir)
        if self._cancel_reason and manifest.status == KILLED:
            manifest.reason = self._cancel_reason
        if self.tracker is not None and self.spec.run_id:
            self.tracker.complete_run(self.spec.run_id, manifest, output_dir)
        return self._result_from(manifest, output_dir)

    def _read_manifest(self, output_dir: Path | None) -> Manifest:
        try:
            if output_dir is None:
                raise FileNotFoundError("no output")
            return Manifest.read(output_dir)
        except (OSError, ValueError) as exc:
            status = KILLED if self._cancel_reason else FAILED
            log.debug("no manifest for %s: %s", self.job_name, exc)
            now = time.time()
            return Manifest(
                self.job_name,
                status=status,
                parameters=self.spec.recorded_parameters,
                reason=self._exit_reason() or f"the job ended without a manifest ({exc})",
                started_at=now,
                ended_at=now,
            )

    def _exit_reason(self) -> str:
        """Why the job ended, as the backend knows it (exit message, OOM...)."""
        return ""

    def _result_from(self, manifest: Manifest, output_dir: Path | None) -> RunResult:
        notebook = output_dir / manifest.notebook if output_dir and manifest.notebook else None
        tracker_uri = self.tracker.uri if self.tracker else self.spec.tracking_uri
        run_url = None
        if self.tracker and self.spec.run_id and self.spec.experiment_id:
            run_url = ui.run_url(tracker_uri, self.spec.experiment_id, self.spec.run_id)
        return RunResult(
            job_name=self.job_name,
            status=manifest.status,
            run_id=self.spec.run_id,
            experiment_id=self.spec.experiment_id,
            tracking_uri=tracker_uri,
            backend=self.spec.backend,
            duration=manifest.duration,
            output_notebook=str(notebook) if notebook and notebook.exists() else None,
            html=str(output_dir / manifest.html) if output_dir and manifest.html else None,
            parameters=manifest.parameters,
            metrics=manifest.last_metrics(),
            outputs=dict(self.spec.outputs),
            reason=manifest.reason,
            error=manifest.error,
            run_url=run_url,
        )
