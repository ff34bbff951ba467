"""``python -m batcat_nb.worker``: execute the job laid out under ``/opt/ml`` (or ``$BATCAT_ML_ROOT``).

The one piece that executes notebooks, the same in a local subprocess, a Docker container and
a SageMaker Processing job. It reads ``input/batcat/job.json``, runs the notebook from
``input/code`` with papermill, and leaves the executed notebook, its HTML and the manifest in
``output/notebook``. Exit code 0 means the notebook finished; the reason for anything else is
in ``/opt/ml/output/message``.

``--serve`` runs many jobs, one after another, each in a fresh kernel started while the
previous job executes: one JSON line per job on stdin (``{"root": ..., "env": {...},
"replace_env": false}``), one line back on stdout when it is done; each job's output goes to
``batcat-job.log`` beside its notebook. Sweeps and the batcat agent use it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from . import environment, job_run, lease, retry
from .layout import CODE_CHANNEL, MESSAGE_LIMIT, JobLayout
from .manifest import FAILED, FINISHED, KILLED, RECORDS_NAME, CellError, Manifest
from .privileges import drop_privileges
from .record import RECORDS_ENV
from .redact import Masker
from .secrets import for_job as job_secrets

log = logging.getLogger("batcat_nb.worker")

JOB_LOG_NAME = "batcat-job.log"
TRACKING_FROM_STDIN_ENV = "BATCAT_TRACKING_FROM_STDIN"  # the run id arrives on stdin
IN_JOB_ENV = "BATCAT_IN_JOB"  # set in the kernel: this notebook runs as a batch job


class JobStopped(BaseException):
    """SIGTERM or the job's own time limit; a BaseException so no library swallows it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def skip_slow_optional_imports() -> None:
    """Keep jsonschema from importing ``rfc3987_syntax`` (~2 s of Lark grammars at import).

    nbformat imports jsonschema, which loads that optional format checker when installed
    (JupyterLab brings it); notebook validation never uses it. python-jsonschema/jsonschema#1428.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    skip_slow_optional_imports()
    parser = argparse.ArgumentParser(prog="python -m batcat_nb.worker", description=__doc__)
    parser.add_argument("--serve", action="store_true", help="run jobs read from stdin")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    if args.serve:
        return serve()
    layout = JobLayout.current()
    drop_privileges(layout)  # the runner image starts as root: see privileges.py
    try:
        job = json.loads(layout.job_file.read_text())
    except (OSError, ValueError) as exc:
        _write_message(layout, f"cannot read the job description {layout.job_file}: {exc}")
        return 2
    kernels = KernelSupply()
    kernels.prepare(job["kernel"])  # boots while papermill imports
    own = None if os.environ.get(TRACKING_FROM_STDIN_ENV) else job_run.start(job)  # no launcher
    worker = Worker(layout, job)
    code = worker.run(kernels, functools.partial(dict, own.env) if own else _late_tracking_env)
    if own is not None:
        own.complete(worker.manifest, worker.output_dir)
    return code


def serve() -> int:
    """Run jobs from stdin until it closes; answer each on stdout."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not break the protocol
    # A signal names no job: one that arrives late, after its job ended, must not end this
    # process. Between jobs it is ignored; during a job it stops it only if asked in its stop file.
    signal.signal(signal.SIGTERM, lambda *_: None)
    kernels = KernelSupply(keep_spare=True)
    kernels.prepare("python3")  # the usual kernel, ready for the first job
    try:
        for line in sys.stdin:
            request = json.loads(line)
            layout = JobLayout(Path(request["root"]))
            job = json.loads(layout.job_file.read_text())
            worker = Worker(layout, job, stop_requested=layout.stop_file.exists)
            env: Callable[[], dict[str, str]] = functools.partial(dict, request.get("env", {}))
            worker.output_dir.mkdir(parents=True, exist_ok=True)
            with (
                open(worker.output_dir / JOB_LOG_NAME, "a", buffering=1) as job_log,
                contextlib.redirect_stdout(job_log),
                contextlib.redirect_stderr(job_log),
            ):
                code = worker.run(kernels, env, replace_env=bool(request.get("replace_env")))
            _reply(replies, {"root": request["root"], "exit": code})
    finally:
        kernels.close()
    return 0


def _reply(stream: TextIO, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


class KernelSupply:
    """Kernels started ahead of need, each used by exactly one job."""

    def __init__(self, keep_spare: bool = False) -> None:
        self.keep_spare = keep_spare
        self._spare: Any = None

    def prepare(self, name: str) -> None:
        """Start the next job's kernel now; a failure (not installed) is met again in the job."""
        if self._spare is None:
            try:
                self._spare = _start_kernel(name)
            except Exception as exc:  # take() raises it inside the job, which describes it
                log.debug("kernel %s not started ahead: %s", name, exc)

    def take(self, name: str) -> Any:
        km, self._spare = self._spare, None
        try:
            if km is None or km.kernel_name != name:
                if km is not None:
                    _shutdown_kernel(km)
                km = _start_kernel(name)
            if self.keep_spare:
                self._spare = _start_kernel(name)  # boots while this job runs
        except BaseException:  # a stop during a start: no kernel is left behind
            if km is not None:
                _shutdown_kernel(km)
            raise
        return km

    def close(self) -> None:
        if self._spare is not None:
            _shutdown_kernel(self._spare)
            self._spare = None


class Worker:
    """Runs one job and always leaves a manifest behind."""

    def __init__(
        self, layout: JobLayout, job: dict[str, Any], stop_requested: Callable[[], bool] = lambda: True
    ) -> None:
        """``stop_requested()`` tells whether a SIGTERM is meant for this job (always, by default)."""
        self.layout = layout
        self.job = job
        self.stop_requested = stop_requested
        self.code_dir = layout.input(CODE_CHANNEL)
        self.output_dir = layout.output(job["output_channel"])
        stem = Path(job["notebook"]).stem
        self.manifest = Manifest(
            job_name=job["job_name"],
            notebook=f"{stem}.ipynb",
            parameters=job["recorded_parameters"],
            kernel=job["kernel"],
        )
        self.masker = Masker()  # the job's secret values, once resolved
        self.kernel_python: str | None = None  # the kernel's interpreter, once it has started

    def run(
        self, kernels: KernelSupply, job_env: Callable[[], dict[str, str]], replace_env: bool = False
    ) -> int:
        """Execute the job in a kernel from ``kernels``.

        ``job_env()`` gives the variables the kernel needs for this job (the MLflow run's, at
        least), when they are known; with ``replace_env`` they replace the kernel's whole
        environment (a kernel started for another caller).
        """
        manifest = self.manifest
        manifest.started_at = time.time()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        held = lease.hold(self.output_dir.resolve(), create=False)  # until the manifest is written
        previous = self._install_signal_handlers()
        try:
            if self.layout.stop_file.exists():
                raise JobStopped("stopped before it started")
            self._execute(kernels, job_env, replace_env)
            manifest.status = FINISHED
        except JobStopped as stop:
            manifest.status, manifest.reason = KILLED, stop.reason
        except Exception as exc:  # every failure ends in the manifest, never in a lost job
            executed = self.output_dir / manifest.notebook
            manifest.status, manifest.error, manifest.reason = _describe(exc, self.job, executed)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            manifest.ended_at = time.time()
            mask_job(self.masker, manifest, self.output_dir)
            collect_records(manifest, self.output_dir)
            manifest.html = render_html(self.output_dir / manifest.notebook)
            environment.write(self.output_dir, self.kernel_python)
            manifest.write(self.output_dir)
            if manifest.status != FINISHED:
                _write_message(self.layout, manifest.reason or manifest.status)
            if held is not None:
                held.close()
        log.info("%s %s in %.1fs", manifest.job_name, manifest.status, manifest.duration)
        return 0 if manifest.status == FINISHED else 1

    def _install_signal_handlers(self) -> dict[int, Any]:
        def stop(signum: int, _frame: Any) -> None:
            if signum == signal.SIGINT or self.stop_requested():
                raise JobStopped(f"stopped by {signal.Signals(signum).name}")

        def expire(_signum: int, _frame: Any) -> None:
            raise JobStopped(f"timed out after {self.job['timeout']:g}s (--timeout)")

        previous: dict[int, Any] = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        if self.job.get("timeout"):
            previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, expire)
            signal.setitimer(signal.ITIMER_REAL, float(self.job["timeout"]))
        return previous

    def _execute(
        self, kernels: KernelSupply, job_env: Callable[[], dict[str, str]], replace_env: bool
    ) -> None:
        km = kernels.take(self.job["kernel"])
        self.kernel_python = environment.kernel_python(km.kernel_spec.argv)
        try:
            import papermill

            threading.Thread(target=_html_exporter, daemon=True).start()  # built while we wait
            parameters = dict(self.job["parameters"])
            for name, channel_path in self.job["channel_parameters"].items():
                parameters[name] = str(self.layout.resolve(channel_path))
            env = {
                **job_env(),
                RECORDS_ENV: str(self.output_dir / RECORDS_NAME),
                IN_JOB_ENV: self.job["job_name"],
            }
            secrets = job_secrets(self.job.get("secrets", {}), env)
            self.masker = secrets.masker
            env.update(secrets.env)
            parameters.update(secrets.parameters)
            log_output = bool(self.job.get("log_output"))
            launcher_bar = self.job.get("progress") == "file"  # the launcher draws it from this file
            progress_file = str(self.layout.progress_file) if launcher_bar else ""
            papermill.execute_notebook(
                self._source(),
                str(self.output_dir / self.manifest.notebook),
                parameters=parameters,
                engine_name="batcat",
                kernel_name=self.job["kernel"],
                progress_bar=bool(self.job.get("progress", True)) and not launcher_bar,
                log_output=log_output,
                stdout_file=sys.stdout if log_output else None,
                stderr_file=sys.stderr if log_output else None,
                execution_timeout=self.job.get("execution_timeout"),
                cwd=str(self.code_dir),
                km=km,
                batcat_preamble=job_preamble(self.code_dir, env, replace=replace_env),
                batcat_progress_file=progress_file,
                batcat_masker=self.masker,
            )
        finally:
            _shutdown_kernel(km)

    def _source(self) -> Any:
        """The notebook to execute: given in job.json (a text notebook, a rerun), else the file."""
        content = self.job.get("notebook_content")
        if content is None:
            return str(self.code_dir / self.job["notebook"])
        import nbformat

        return nbformat.from_dict(content)


def job_preamble(cwd: Path | None, env: dict[str, str], replace: bool = False) -> str:
    """Kernel code run before the first cell: the job's directory and environment.

    Kernels start before their job is known (while papermill imports, or while the previous
    job runs), so what is particular to the job reaches the kernel here.
    """
    lines = ["import os as _os"]
    if replace:
        lines.append("_os.environ.clear()")
    if cwd is not None:
        lines.append(f"_os.chdir({str(cwd)!r})")
    if env:  # a Python literal: JSON would cut an emoji into two surrogates the kernel refuses
        lines.append(f"_os.environ.update({env!r})")
    return "; ".join([*lines, "del _os"])


def mask_job(masker: Masker, manifest: Manifest, output_dir: Path) -> None:
    """Secret values out of the executed notebook (before its HTML exists) and the manifest."""
    if not masker:
        return
    import nbformat

    executed = output_dir / manifest.notebook
    if executed.exists():
        notebook = nbformat.read(executed, as_version=4)
        masker.data(notebook)
        nbformat.write(notebook, executed)
    manifest.reason = masker.text(manifest.reason) if manifest.reason else manifest.reason
    if manifest.error is not None:
        manifest.error.evalue = masker.text(manifest.error.evalue)


def collect_records(manifest: Manifest, output_dir: Path) -> None:
    """Fold what ``batcat_nb.record`` wrote into the manifest's metrics and artifacts.

    A line cut short (the kernel killed mid-write, a full disk) is skipped with a warning:
    every good record is kept.
    """
    path = output_dir / RECORDS_NAME
    if not path.exists():
        return
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            entry = json.loads(line)
            if entry["kind"] == "metric":
                point = (float(entry["value"]), int(entry["step"]))
                manifest.metrics.setdefault(str(entry["name"]), []).append(point)
            else:
                manifest.artifacts.append(str(entry["path"]))
        except (ValueError, TypeError, KeyError) as exc:
            if line.strip():
                log.warning("%s line %d skipped (%s): %.80s", RECORDS_NAME, number, exc, line)


def render_html(executed: Path) -> str | None:
    """Write the executed notebook as HTML beside it; return the HTML file's name."""
    if not executed.exists():
        return None
    try:
        body, _ = _html_exporter().from_filename(str(executed))
    except Exception as exc:
        log.warning("could not render %s as HTML: %s", executed.name, exc)
        return None
    html = executed.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html.name


@functools.cache
def _html_exporter() -> Any:
    """One exporter per process: building its templates costs far more than rendering."""
    from nbconvert import HTMLExporter

    return HTMLExporter()


def _start_kernel(name: str) -> Any:
    """Start a kernel over IPC sockets in a private directory (no open TCP ports)."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    sockets = tempfile.mkdtemp(prefix="batcat-kernel-")
    env = {k: v for k, v in os.environ.items() if k != TRACKING_FROM_STDIN_ENV}
    km = AsyncKernelManager(kernel_name=name, transport="ipc", ip=os.path.join(sockets, "kernel"))
    run_sync(km.start_kernel)(env=env, cwd=sockets)
    return km


def _shutdown_kernel(km: Any) -> None:
    from jupyter_core.utils import run_sync

    try:
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
    except Exception as exc:
        log.warning("kernel shutdown: %s", exc)
    finally:
        shutil.rmtree(os.path.dirname(km.ip), ignore_errors=True)


def _late_tracking_env() -> dict[str, str]:
    """The MLflow run's variables when the launcher sends them after the start (local runs)."""
    if not os.environ.get(TRACKING_FROM_STDIN_ENV):
        return {}
    line = sys.stdin.readline()
    return json.loads(line) if line.strip() else {}


def _describe(exc: Exception, job: dict[str, Any], executed: Path) -> tuple[str, CellError | None, str]:
    """The status, the failing cell (if any) and a one-line reason."""
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import CellTimeoutError

    if type(exc).__name__ == "PapermillExecutionError":
        error = CellError(getattr(exc, "cell_index", None), exc.ename, exc.evalue)  # type: ignore[attr-defined]
        return FAILED, error, str(error)
    if isinstance(exc, CellTimeoutError):
        limit = job.get("execution_timeout")
        return KILLED, None, f"a cell ran longer than {limit:g}s (--execution-timeout)"
    if isinstance(exc, NoSuchKernel):
        return FAILED, None, f"kernel '{job['kernel']}' is not installed where the job ran"
    if retry.kernel_died_before_first_cell(exc, executed):  # not the notebook's fault: retryable
        return FAILED, None, f"{retry.KERNEL_DIED} ({type(exc).__name__}: {exc})"
    return FAILED, None, f"{type(exc).__name__}: {exc}"


def _write_message(layout: JobLayout, message: str) -> None:
    try:
        layout.message_file.parent.mkdir(parents=True, exist_ok=True)
        layout.message_file.write_text(message.encode()[:MESSAGE_LIMIT].decode(errors="ignore"))
    except OSError as exc:
        log.warning("cannot write %s: %s", layout.message_file, exc)


if __name__ == "__main__":
    sys.exit(main())
