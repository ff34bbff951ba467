"""Complete the runs whose launcher is gone: ``batcat runs reconcile``, the agent, the next run.

A run stays RUNNING while its job's lease (``batcat_nb.lease``) is held: by the launcher until
it has completed the run, by the worker while it executes. When nobody holds it any more, the
job has ended and nobody will complete its run: it is completed here from the manifest in its
output directory (``batcat.output``), as its launcher would have, or marked FAILED with the
reason when the worker died before writing one (MLflow's statuses: FINISHED, FAILED, KILLED).
Runs of backends whose jobs run elsewhere (SageMaker) are left to ``batcat download``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from . import lease
from .backends import registry
from .errors import BackendError
from .manifest import FAILED, RUNNING, Manifest
from .tracking import TAG_BACKEND, TAG_JOB_NAME, TAG_OUTPUT, Tracker

log = logging.getLogger("batcat_nb")

NO_MANIFEST = "its worker ended without a manifest (killed, or out of memory?)"


def reconcile_store(tracker: Tracker) -> list[tuple[str, str]]:
    """Complete every RUNNING run of the store whose job has ended; [(run id, status)]."""
    client = tracker.client
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    running = client.search_runs(
        experiments, filter_string=f"attributes.status = '{RUNNING}'", max_results=50000
    )
    done = []
    for run in running:
        status = reconcile_run(tracker, run)
        if status is not None:
            done.append((run.info.run_id, status))
    return done


def reconcile_run(tracker: Tracker, run: Any) -> str | None:
    """Complete ``run`` if its job has ended and nobody else will; its new status, or None."""
    tags = run.data.tags
    output = tags.get(TAG_OUTPUT)
    backend = _backend(tags.get(TAG_BACKEND, ""))
    if not output or not getattr(backend, "leased", False):
        return None  # its job is tracked elsewhere (SageMaker: `batcat download`)
    with lease.abandoned(output) as ended:
        if not ended:
            return None
        collect = getattr(backend, "collect_orphan", None)  # e.g. a container that outlived us
        if collect is not None and not collect(output):
            return None  # still running: its lease goes back for the next look
        manifest = _manifest(Path(output), tags.get(TAG_JOB_NAME, ""))
        tracker.complete_run(run.info.run_id, manifest, Path(output) if Path(output).is_dir() else None)
        lease.lease_path(output).unlink(missing_ok=True)
        log.info("completed run %s (%s) from %s: %s", run.info.run_id, tags.get(TAG_JOB_NAME), output,
                 manifest.status)  # fmt: skip
        return manifest.status


def _backend(name: str) -> Any:
    """The backend a run was tagged with, or None for one this environment does not know."""
    try:
        return registry.get(name)
    except BackendError:
        return None


def _manifest(output: Path, job_name: str) -> Manifest:
    try:
        manifest = Manifest.read(output)
    except (OSError, ValueError):
        manifest = Manifest(job_name, status=RUNNING)
    if manifest.status == RUNNING:  # never written, or written when the job started
        now = time.time()
        manifest.status, manifest.reason = FAILED, NO_MANIFEST
        manifest.started_at, manifest.ended_at = manifest.started_at or now, now
    return manifest
