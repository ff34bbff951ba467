"""``python -m batcat_nb.worker``: execute the job laid out under ``/opt/ml`` (or ``$BATCAT_ML_ROOT``).

The one piece that executes notebooks, the same in a local subprocess, a Docker container and
a SageMaker Processing job. It reads ``input/batcat/job.json``, runs the notebook from
``input/code`` with papermill, and leaves the executed notebook, its HTML and the manifest in
``output/notebook``. Exit code 0 means the notebook finished; the reason for anything else is
in ``/opt/ml/output/message``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .layout import JobLayout
from .manifest import FAILED, FINISHED, KILLED, RECORDS_NAME, CellError, Manifest
from .record import RECORDS_ENV

log = logging.getLogger("batcat_nb.worker")

TRACKING_FROM_STDIN_ENV = "BATCAT_TRACKING_FROM_STDIN"  # the run id arrives on stdin
IN_JOB_ENV = "BATCAT_IN_JOB"  # set in the kernel: this notebook runs as a batch job
_MESSAGE_LIMIT = 1024


def env_preamble(env: dict[str, str]) -> str:
    """Kernel code that sets ``env`` in the kernel's environment before the first cell."""
    if not env:
        return ""
    return f"import os as _os; _os.environ.update({json.dumps(env)}); del _os"


class JobStopped(BaseException):
    """SIGTERM or the job's own time limit; a BaseException so no library swallows it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    layout = JobLayout.current()
    try:
        job = json.loads(layout.job_file.read_text())
    except (OSError, ValueError) as exc:
        _write_message(layout, f"cannot read the job description {layout.job_file}: {exc}")
        return 2
    return Worker(layout, job).run()


class Worker:
    """Runs one job and always leaves a manifest behind."""

    def __init__(self, layout: JobLayout, job: dict[str, Any]) -> None:
        self.layout = layout
        self.job = job
        self.code_dir = layout.input("code")
        self.output_dir = layout.output(job["output_channel"])
        stem = Path(job["notebook"]).stem
        self.manifest = Manifest(
            job_name=job["job_name"],
            notebook=f"{stem}.ipynb",
            parameters=job["recorded_parameters"],
            kernel=job["kernel"],
        )

    def run(self) -> int:
        manifest = self.manifest
        manifest.started_at = time.time()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._install_signal_handlers()
        try:
            self._execute()
            manifest.status = FINISHED
        except JobStopped as stop:
            manifest.status, manifest.reason = KILLED, stop.reason
        except Exception as exc:  # every failure ends in the manifest, never in a lost job
            manifest.status, manifest.error, manifest.reason = _describe(exc, self.job)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            manifest.ended_at = time.time()
            collect_records(manifest, self.output_dir)
            manifest.html = render_html(self.output_dir / manifest.notebook)
            manifest.write(self.output_dir)
            if manifest.status != FINISHED:
                _write_message(self.layout, manifest.reason or manifest.status)
        log.info("%s %s in %.1fs", manifest.job_name, manifest.status, manifest.duration)
        return 0 if manifest.status == FINISHED else 1

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            raise JobStopped(f"stopped by {signal.Signals(signum).name}")

        def expire(_signum: int, _frame: Any) -> None:
            raise JobStopped(f"timed out after {self.job['timeout']:g}s (--timeout)")

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if self.job.get("timeout"):
            signal.signal(signal.SIGALRM, expire)
            signal.setitimer(signal.ITIMER_REAL, float(self.job["timeout"]))

    def _execute(self) -> None:
        kernel_env = {
            **os.environ,
            RECORDS_ENV: str(self.output_dir / RECORDS_NAME),
            IN_JOB_ENV: self.job["job_name"],
        }
        kernel_env.pop(TRACKING_FROM_STDIN_ENV, None)
        # Start the kernel first: it boots while papermill imports.
        km = _start_kernel(self.job["kernel"], self.code_dir, kernel_env)
        try:
            import papermill

            threading.Thread(target=_import_nbconvert, daemon=True).start()  # while we wait
            parameters = dict(self.job["parameters"])
            for name, channel_path in self.job["channel_parameters"].items():
                parameters[name] = str(self.layout.resolve(channel_path))
            papermill.execute_notebook(
                str(self.code_dir / self.job["notebook"]),
                str(self.output_dir / self.manifest.notebook),
                parameters=parameters,
                engine_name="batcat",
                kernel_name=self.job["kernel"],
                progress_bar=self.job.get("progress", True),
                log_output=self.job.get("log_output", False),
                stdout_file=sys.stdout if self.job.get("log_output") else None,
                stderr_file=sys.stderr if self.job.get("log_output") else None,
                execution_timeout=self.job.get("execution_timeout"),
                cwd=str(self.code_dir),
                km=km,
                batcat_preamble=env_preamble(_late_tracking_env()),
            )
        finally:
            _shutdown_kernel(km)


def collect_records(manifest: Manifest, output_dir: Path) -> None:
    """Fold what ``batcat_nb.record`` wrote into the manifest's metrics and artifacts."""
    path = output_dir / RECORDS_NAME
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry["kind"] == "metric":
            manifest.metrics.setdefault(entry["name"], []).append((entry["value"], entry["step"]))
        else:
            manifest.artifacts.append(entry["path"])


def render_html(executed: Path) -> str | None:
    """Write the executed notebook as HTML beside it; return the HTML file's name."""
    if not executed.exists():
        return None
    try:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_filename(str(executed))
    except Exception as exc:
        log.warning("could not render %s as HTML: %s", executed.name, exc)
        return None
    html = executed.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html.name


def _start_kernel(name: str, cwd: Path, env: dict[str, str]) -> Any:
    """Start the kernel over IPC sockets in a private directory (no open TCP ports)."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    sockets = tempfile.mkdtemp(prefix="batcat-kernel-")
    km = AsyncKernelManager(kernel_name=name, transport="ipc", ip=os.path.join(sockets, "kernel"))
    run_sync(km.start_kernel)(cwd=str(cwd), env=env)
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


def _import_nbconvert() -> None:
    import nbconvert  # noqa: F401


def _late_tracking_env() -> dict[str, str]:
    """The MLflow run's variables when the launcher sends them after the start (local runs)."""
    if not os.environ.get(TRACKING_FROM_STDIN_ENV):
        return {}
    line = sys.stdin.readline()
    return json.loads(line) if line.strip() else {}


def _describe(exc: Exception, job: dict[str, Any]) -> tuple[str, CellError | None, str]:
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
    return FAILED, None, f"{type(exc).__name__}: {exc}"


def _write_message(layout: JobLayout, message: str) -> None:
    try:
        layout.message_file.parent.mkdir(parents=True, exist_ok=True)
        layout.message_file.write_text(message.encode()[:_MESSAGE_LIMIT].decode(errors="ignore"))
    except OSError as exc:
        log.warning("cannot write %s: %s", layout.message_file, exc)


if __name__ == "__main__":
    sys.exit(main())
