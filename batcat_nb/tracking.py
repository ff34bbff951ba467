"""MLflow runs for batcat jobs, through ``MlflowClient`` with explicit ids.

The launcher creates the run before the job starts and completes it from the job's manifest
afterwards, so results reach MLflow even when the job itself could not.
"""

from __future__ import annotations

import getpass
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import TrackingError
from .manifest import Manifest
from .provenance import project_dir
from .redact import mask_uri, without_credentials
from .storage import output_files

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger("batcat_nb")

# Tag keys, one place.
TAG_RUN_NAME = "mlflow.runName"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_USER = "mlflow.user"
TAG_NOTEBOOK_PATH = "batcat.notebook.path"
TAG_NOTEBOOK_SHA = "batcat.notebook.sha256"
TAG_BACKEND = "batcat.backend"
TAG_VERSION = "batcat.version"
TAG_KERNEL = "batcat.kernel"
TAG_JOB_NAME = "batcat.job_name"
TAG_OUTPUT = "batcat.output"
TAG_REASON = "batcat.reason"
TAG_ERROR_CELL = "batcat.error.cell_index"
TAG_ERROR_NAME = "batcat.error.ename"
TAG_ERROR_VALUE = "batcat.error.evalue"
TAG_COMPLETED = "batcat.completed"
TAG_IMAGE = "batcat.image"  # the image the job ran in: a local tag or a registry URI
TAG_IMAGE_DIGEST = "batcat.image.digest"
TAG_RERUN_OF = "batcat.rerun_of"  # the run this one re-ran
TAG_ATTEMPT = "batcat.attempt"  # 1, or more when infrastructure failures were retried

_PARAM_MAX = 6000  # MLflow's limit on a parameter value
_TAG_MAX = 5000


STORE_DIR = "mlflow-store"  # the embedded store's own folder: mlflow.db and mlartifacts/


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the embedded default: SQLite in ``mlflow-store/`` of the project.

    A folder of its own, so that a Docker job is given the store and nothing else of the project;
    a project that already has ``mlflow.db`` at its root keeps using it.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return absolute_uri(os.environ["MLFLOW_TRACKING_URI"])
    legacy = project_dir() / "mlflow.db"
    database = legacy if legacy.exists() else project_dir() / STORE_DIR / "mlflow.db"
    return f"sqlite:///{database}"


def absolute_uri(uri: str) -> str:
    """``sqlite:///mlflow.db`` (relative to this directory) as ``sqlite:////abs/mlflow.db``.

    The agent, the worker and the kernel each run in a directory of their own: a relative
    path must be fixed where the user gave it, or each process opens a store of its own.
    """
    path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    if not path or path.startswith("/") or path == ":memory:":
        return uri
    return f"sqlite:///{Path(path).absolute()}"


def run_tags(
    *, notebook_path: Path, notebook_sha256: str, backend: str, kernel: str, job_name: str
) -> dict[str, str]:
    """Provenance tags every batcat run carries, whoever launched it."""
    from .provenance import git_tags

    return {
        TAG_SOURCE_NAME: str(notebook_path),
        TAG_SOURCE_TYPE: "NOTEBOOK",
        TAG_NOTEBOOK_PATH: str(notebook_path),
        TAG_NOTEBOOK_SHA: notebook_sha256,
        TAG_BACKEND: backend,
        TAG_VERSION: __version__,
        TAG_KERNEL: kernel,
        TAG_JOB_NAME: job_name,
        **git_tags(notebook_path),
    }


def run_env(uri: str, run_id: str, experiment_id: str) -> dict[str, str]:
    """What a job's process needs so that ``mlflow.log_*`` lands on this run."""
    return {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
    }


class Tracker:
    """One MLflow tracking store; mlflow is imported on first use."""

    def __init__(self, uri: str) -> None:
        self.uri = absolute_uri(uri)
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> MlflowClient:
        if self.uri.startswith(("http://", "https://")):
            _check_server(self.uri)
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        from mlflow.tracking import MlflowClient

        from .tracking_retry import RetryingClient

        try:
            client = RetryingClient(MlflowClient(tracking_uri=self.uri), self.uri)
            client.search_experiments(max_results=1)  # builds the schema of a new store
        except Exception as exc:
            raise TrackingError(_store_problem(self.uri, exc)) from None
        return client  # type: ignore[return-value]

    def experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        client = self.client
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=self._artifact_location(name))
        except MlflowException:  # created meanwhile by a concurrent run
            again = client.get_experiment_by_name(name)
            if again is None:
                raise
            return again.experiment_id

    def _artifact_location(self, experiment: str) -> str | None:
        if not self.uri.startswith("sqlite:///"):
            return None  # the server or store decides
        root = Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts"
        return (root / experiment.replace("/", "_")).resolve().as_uri()

    def start_run(
        self, *, experiment: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> tuple[str, str]:
        """Create a RUNNING run with its parameters; return (run id, experiment id)."""
        from mlflow.entities import Param

        try:
            experiment_id = self.experiment_id(experiment)
            all_tags = {TAG_RUN_NAME: run_name, TAG_USER: _user(), **tags}
            run = self.client.create_run(
                experiment_id, run_name=run_name, tags={k: v[:_TAG_MAX] for k, v in all_tags.items()}
            )
            run_id = run.info.run_id
            batch = [Param(k, str(v)[:_PARAM_MAX]) for k, v in params.items()]
            for start in range(0, len(batch), 100):
                self.client.log_batch(run_id, params=batch[start : start + 100])
        except TrackingError:
            raise
        except Exception as exc:
            raise TrackingError(_store_problem(self.uri, exc)) from None
        return run_id, experiment_id

    def complete_run(self, run_id: str, manifest: Manifest, output_dir: Path | None) -> None:
        """Log metrics, artifacts and status from ``manifest``; a second call changes nothing."""
        try:
            self._complete_run(run_id, manifest, output_dir)
        except TrackingError:
            raise
        except Exception as exc:  # the manifest stays on disk: `batcat runs reconcile` completes it later
            raise TrackingError(_store_problem(self.uri, exc)) from None

    def _complete_run(self, run_id: str, manifest: Manifest, output_dir: Path | None) -> None:
        from mlflow.entities import Metric, RunTag

        client = self.client
        if client.get_run(run_id).data.tags.get(TAG_COMPLETED) == "true":
            return
        stamp = int((manifest.ended_at or time.time()) * 1000)
        metrics = [
            Metric(name, float(value), stamp, step)
            for name, points in manifest.metrics.items()
            for value, step in points
        ]
        tags = [RunTag(TAG_REASON, manifest.reason[:_TAG_MAX])] if manifest.reason else []
        if manifest.error is not None:
            tags += [
                RunTag(TAG_ERROR_CELL, str(manifest.error.cell_index)),
                RunTag(TAG_ERROR_NAME, manifest.error.ename[:_TAG_MAX]),
                RunTag(TAG_ERROR_VALUE, manifest.error.evalue[:_TAG_MAX]),
            ]
        for start in range(0, max(len(metrics), 1), 1000):
            client.log_batch(run_id, metrics=metrics[start : start + 1000], tags=tags if start == 0 else [])
        if output_dir is not None and output_dir.is_dir():
            for path in output_files(output_dir):  # never a link out of the output
                folder = path.parent.relative_to(output_dir).as_posix()
                client.log_artifact(run_id, str(path), None if folder == "." else folder)
        client.set_tag(run_id, TAG_COMPLETED, "true")
        client.set_terminated(run_id, status=manifest.status, end_time=stamp)

    def find_run(self, experiment_id: str, tag: str, value: str) -> str | None:
        """The newest run of the experiment whose ``tag`` is ``value``."""
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1
        )
        return found[0].info.run_id if found else None

    def finished_children(self, experiment_id: str, parent_id: str, key_tag: str) -> list[str]:
        """``key_tag`` of the parent's child runs that FINISHED."""
        children = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=50000
        )
        return [r.data.tags.get(key_tag, "") for r in children if r.info.status == "FINISHED"]

    def retry_run(self, run_id: str, attempt: int, reason: str) -> None:
        """Reopen a run for its next attempt, keeping why the previous one failed."""
        client = self.client
        for key in (TAG_COMPLETED, TAG_REASON, TAG_ERROR_CELL, TAG_ERROR_NAME, TAG_ERROR_VALUE):
            if key in client.get_run(run_id).data.tags:
                client.delete_tag(run_id, key)
        client.set_tag(run_id, f"{TAG_ATTEMPT}.{attempt - 1}.reason", reason[:_TAG_MAX])
        client.set_tag(run_id, TAG_ATTEMPT, str(attempt))
        client.update_run(run_id, status="RUNNING")

    def reopen_run(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def run_tags(self, run_id: str) -> dict[str, str]:
        """The tags of a run (a workflow's parent names its execution in them)."""
        return dict(self.client.get_run(run_id).data.tags)

    def end_run(
        self, run_id: str, status: str, tags: Mapping[str, str], metrics: Mapping[str, float]
    ) -> None:
        """Tag, log final metrics and terminate a run the launcher owns (a sweep's parent)."""
        from mlflow.entities import Metric, RunTag

        stamp = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
            tags=[RunTag(k, str(v)[:_TAG_MAX]) for k, v in tags.items()],
        )
        self.client.set_terminated(run_id, status=status, end_time=stamp)

    def fail_run(self, run_id: str, status: str, reason: str) -> None:
        """End a run that produced no manifest (the job never started, or vanished)."""
        self.client.set_tag(run_id, TAG_REASON, reason[:_TAG_MAX])
        self.client.set_terminated(run_id, status=status)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _check_server(uri: str) -> None:
    try:
        # /health needs no login, and urllib cannot take one inside a URL
        with urllib.request.urlopen(f"{without_credentials(uri).rstrip('/')}/health", timeout=5):
            pass
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"the MLflow tracking server {mask_uri(uri)} is not answering ({reason}); start it "
            "(`mlflow server`) or unset MLFLOW_TRACKING_URI to use the local SQLite store"
        ) from None


def _store_problem(uri: str, exc: Exception) -> str:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mask_uri(
        f"cannot write to the MLflow tracking store {uri}: {detail[:300]}. Set "
        "MLFLOW_TRACKING_URI (or --tracking-uri) to a store you can write, e.g. "
        "sqlite:///mlflow.db"
    )
