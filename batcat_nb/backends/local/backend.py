"""The local backend: the worker in a subprocess, over a local directory laid out like ``/opt/ml``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path

from ... import lease
from ...errors import KernelNotFound, UsageError
from ...layout import CODE_CHANNEL, ML_ROOT_ENV, NOTEBOOK_CHANNEL, JobLayout
from ...manifest import RUNNING, Manifest
from ...secrets import launcher_env
from ...spec import JobSpec
from ...storage import download, is_s3, upload
from ...tracking import Tracker, run_env
from ...worker import TRACKING_FROM_STDIN_ENV
from ..base import JobHandle
from . import agent
from .pool import WorkerPool
from .progress import CellProgress

STOP_GRACE_SECONDS = 10.0


class LocalBackend:
    """Runs the worker as a subprocess on this machine, in a fresh kernel."""

    name = "local"
    leased = True  # a job's lease sits beside its output: reconcile completes a dead launcher's run

    def __init__(self) -> None:
        self._pool: WorkerPool | None = None
        self._parallel = 1

    def validate(self, spec: JobSpec) -> None:
        if spec.backend_options:
            names = ", ".join(f"--{k.replace('_', '-')}" for k in spec.backend_options)
            raise UsageError(f"{names}: options of the docker and sagemaker backends; add --backend NAME")
        if spec.kernel not in installed_kernels():
            raise KernelNotFound(
                f"kernel '{spec.kernel}' is not installed (installed: "
                f"{', '.join(sorted(installed_kernels()))}); install it (for a Python "
                f"environment: python -m ipykernel install --user --name {spec.kernel}) "
                "or pass --kernel NAME"
            )

    def submit(self, spec: JobSpec) -> LocalHandle:
        return LocalHandle(spec, self._pool, self._parallel)

    def tracker(self, uri: str) -> Tracker:
        """Tracking through the warm agent when it runs our jobs too."""
        return agent.tracker(uri)

    @contextmanager
    def concurrent(self, size: int, log_path: Path) -> Iterator[None]:
        """Within this block up to ``size`` jobs run at once on warm workers: the agent's, or
        a pool of our own when the agent is off."""
        if agent.enabled():
            self._parallel = size
            try:
                yield
            finally:
                self._parallel = 1
            return
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._pool = WorkerPool(size, log_path)
        try:
            yield
        finally:
            pool, self._pool = self._pool, None
            pool.close()


def installed_kernels() -> set[str]:
    """Kernel names Jupyter can start here, without importing jupyter_client."""
    from jupyter_core.paths import jupyter_path

    names = {"python3"}  # ipykernel's own kernel is always available beside batcat
    for directory in jupyter_path("kernels"):
        if os.path.isdir(directory):
            names.update(
                entry
                for entry in os.listdir(directory)
                if os.path.isfile(os.path.join(directory, entry, "kernel.json"))
            )
    return names


class LocalHandle(JobHandle):
    """A job in a local directory laid out like ``/opt/ml``, run by its own worker or a pool's."""

    shows_progress = True  # the worker draws the cell-by-cell bar

    def __init__(self, spec: JobSpec, pool: WorkerPool | None = None, parallel: int = 1) -> None:
        super().__init__(spec)
        self.output_dir = Path(spec.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._lease = lease.hold(self.output_dir)  # `batcat runs reconcile` leaves the run to us
        self.root = Path(tempfile.mkdtemp(prefix=f"batcat-{spec.job_name}-"))
        self.layout = JobLayout(self.root)
        self._message = ""
        self._lay_out()
        self._run: _OwnWorker | _PooledWorker | agent.AgentJob
        self._follower: threading.Thread | None = None
        if pool is not None:
            self._run = _PooledWorker(pool, self.root)
        else:
            self._run = (
                agent.AgentJob(self.root, parallel)
                if agent.enabled()
                else _OwnWorker(self.root, self.log_path)
            )
            if spec.log_output:
                self._follower = threading.Thread(
                    target=_follow, args=(self.log_path, self._run), daemon=True
                )
                self._follower.start()
        self._progress: CellProgress | None = None

    def _lay_out(self) -> None:
        spec, layout = self.spec, self.layout
        _link(layout.input(CODE_CHANNEL), Path(spec.notebook).parent)
        layout.job_file.parent.mkdir(parents=True)
        job = {**spec.worker_job(), "progress": "file" if spec.progress else False}  # the bar is drawn here
        layout.job_file.write_text(json.dumps(job, indent=2))
        _link(layout.output(NOTEBOOK_CHANNEL), self.output_dir)
        for name, source in spec.inputs.items():
            if is_s3(source):
                layout.input(name).mkdir(parents=True)
                download(source, layout.input(name))
            else:
                _link(layout.input(name), Path(source).resolve())
        for name, destination in spec.outputs.items():
            if is_s3(destination):
                layout.output(name).mkdir(parents=True)
            else:
                Path(destination).mkdir(parents=True, exist_ok=True)
                _link(layout.output(name), Path(destination).resolve())

    def _on_attach(self) -> None:
        assert self.tracker is not None and self.spec.run_id and self.spec.experiment_id
        env = run_env(self.tracker.uri, self.spec.run_id, self.spec.experiment_id)
        self._run.start({**env, **launcher_env(self.spec.secrets)})  # by pipe, never on disk
        if self.spec.progress:
            self._progress = CellProgress(self.layout.progress_file, self._run.wait)

    def status(self) -> str:
        if self._run.running():
            return RUNNING
        try:
            return Manifest.read(self.output_dir).status
        except (OSError, ValueError):
            return self.wait().status

    def _wait_for_exit(self, timeout: float | None) -> bool:
        if not self._run.wait(timeout):
            return False
        if getattr(self._run, "lost", False) and self._lease is not None:
            lease.wait_for_others(self._lease)  # the agent died; its worker may still run the job
        if self._follower is not None:
            self._follower.join()
        if self._progress is not None:
            self._progress.join()
        return True

    def _fetch_outputs(self) -> Path:
        for name, destination in self.spec.outputs.items():
            if is_s3(destination):
                upload(self.layout.output(name), destination)
        message = self.layout.message_file
        self._message = message.read_text() if message.exists() else ""
        shutil.rmtree(self.root, ignore_errors=True)
        return self.output_dir

    def _stop(self) -> None:
        self._run.stop()

    def _exit_reason(self) -> str:
        return self._message


class _OwnWorker:
    """One worker process for one job, started at once; the run's ids follow on its stdin.

    Its output goes straight to the job's log (the launcher follows the file): a worker whose
    launcher was killed finishes its job and writes its manifest all the same.
    """

    def __init__(self, root: Path, log_path: Path) -> None:
        env = {**os.environ, ML_ROOT_ENV: str(root), TRACKING_FROM_STDIN_ENV: "1"}
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "batcat_nb.worker"],
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us, not the worker: we stop it cleanly
            )

    def start(self, env: dict[str, str]) -> None:
        self._send(json.dumps(env) + "\n")

    def _send(self, line: str) -> None:
        stdin = self.process.stdin
        if stdin is None or stdin.closed:
            return
        try:
            stdin.write(line.encode())
            stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the worker has already ended; its manifest says why

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float | None) -> bool:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> None:
        self._send("\n")  # a worker still waiting for its run goes on without one
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        threading.Thread(target=self._kill_after_grace, daemon=True).start()

    def _kill_after_grace(self) -> None:
        try:
            self.process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


class _PooledWorker:
    """The job waits for a warm worker of the pool; it is queued once its run exists."""

    def __init__(self, pool: WorkerPool, root: Path) -> None:
        self.pool, self.root = pool, root
        self.future: Future[int] | None = None

    def start(self, env: dict[str, str]) -> None:
        self.future = self.pool.dispatch(self.root, env)

    def running(self) -> bool:
        return self.future is not None and not self.future.done()

    def wait(self, timeout: float | None) -> bool:
        if self.future is None:
            return True  # never queued: it ends without a manifest
        try:
            self.future.exception(timeout)
        except FutureTimeout:
            return False
        return True

    def stop(self) -> None:
        if self.future is not None:
            self.pool.stop(self.root)


def _follow(log_path: Path, job: agent.AgentJob | _OwnWorker) -> None:
    """Echo a job's log file to the terminal while it grows; a closed terminal ends the echo."""
    position = 0
    while True:
        finished = not job.running()
        if log_path.exists():
            with log_path.open("rb") as log_file:
                log_file.seek(position)
                chunk = log_file.read()
            position += len(chunk)
            try:
                sys.stderr.write(chunk.decode(errors="replace"))
                sys.stderr.flush()
            except OSError:  # the terminal was closed (SIGHUP): the job goes on, its log too
                return
        if finished:
            return
        job.wait(0.1)


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target, target_is_directory=target.is_dir())
