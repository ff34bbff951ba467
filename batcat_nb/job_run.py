"""The MLflow run of a job that has no launcher: a deployed workflow's step, started by Step Functions.

Its environment names a tracking server (``MLFLOW_TRACKING_URI``) but no run (no
``MLFLOW_RUN_ID``): the worker creates the run itself before the notebook starts, hands its ids
to the kernel (``mlflow.log_*`` in the notebook lands there) and completes it from the manifest
at the end, as a launcher would. Runs are grouped by their execution's tag: each job creates only
its own run, so steps running at once never race for a shared parent; ``batcat workflow sync``
makes the execution's parent run and hangs them under it. A tracking failure never fails the
job: the manifest still goes to S3, from which ``batcat workflow sync`` completes the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TrackingError
from .manifest import Manifest

log = logging.getLogger("batcat_nb.worker")

# What a deployed step's job environment carries besides MLFLOW_TRACKING_URI.
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
WORKFLOW_ENV = "BATCAT_WORKFLOW"
STEP_ENV = "BATCAT_WORKFLOW_STEP"
EXECUTION_ENV = "BATCAT_WORKFLOW_EXECUTION"

# Tags of a workflow step's run, whoever records it (the job itself, or `batcat workflow sync`).
TAG_WORKFLOW = "batcat.workflow"
TAG_STEP = "batcat.workflow.step"
TAG_EXECUTION = "batcat.workflow.execution"
TAG_STEP_RUN = "batcat.workflow.step_run"  # <execution>/<step>: a step's MLflow run, found again


def workflow_env(uri: str, workflow: str, step: str, execution: str) -> dict[str, str]:
    """What a step's job needs to create and tag its own run."""
    return {
        "MLFLOW_TRACKING_URI": uri,
        EXPERIMENT_ENV: workflow,
        WORKFLOW_ENV: workflow,
        STEP_ENV: step,
        EXECUTION_ENV: execution,
    }


@dataclass
class OwnRun:
    """A run this job created; ``env`` goes to the kernel."""

    tracker: Any
    run_id: str
    env: dict[str, str]

    def complete(self, manifest: Manifest, output_dir: Path) -> None:
        """Status, metrics, artifacts and the executed notebook from the manifest."""
        try:
            self.tracker.complete_run(self.run_id, manifest, output_dir)
        except TrackingError as exc:
            log.warning("could not complete MLflow run %s (batcat workflow sync will): %s", self.run_id, exc)


def start(job: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> OwnRun | None:
    """Create the job's run when its environment names a tracking server but no run; else None."""
    uri = env.get("MLFLOW_TRACKING_URI")
    if not uri or env.get("MLFLOW_RUN_ID"):
        return None
    from ._version import __version__
    from .tracking import TAG_BACKEND, TAG_JOB_NAME, TAG_KERNEL, TAG_VERSION, Tracker, run_env

    workflow, step, execution = env.get(WORKFLOW_ENV, ""), env.get(STEP_ENV, ""), env.get(EXECUTION_ENV, "")
    tags = {TAG_JOB_NAME: job["job_name"], TAG_KERNEL: job["kernel"], TAG_VERSION: __version__}
    if workflow:
        tags[TAG_BACKEND] = "sagemaker"
        tags.update(
            {
                TAG_WORKFLOW: workflow,
                TAG_STEP: step,
                TAG_EXECUTION: execution,
                TAG_STEP_RUN: f"{execution}/{step}",
            }
        )
    tracker = Tracker(uri)
    try:
        run_id, experiment_id = tracker.start_run(
            experiment=env.get(EXPERIMENT_ENV) or workflow or "Default",
            run_name=step or job["job_name"],
            params=job["recorded_parameters"],
            tags=tags,
        )
    except TrackingError as exc:
        log.warning("could not create an MLflow run (batcat workflow sync will): %s", exc)
        return None
    log.info("MLflow run %s in %s", run_id, tracker.uri)
    return OwnRun(tracker, run_id, run_env(tracker.uri, run_id, experiment_id))
