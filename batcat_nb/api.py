"""The one place a run is resolved, validated, tracked and handed to a backend.

Front ends (CLI, magics, ``batcat_nb.run``) build a RunRequest and call ``submit`` or ``run``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from pathlib import Path

from . import replay, retry, secrets
from .backends import registry
from .backends.base import Backend, JobHandle
from .config import CoreConfig, resolve
from .contract import MAX_INPUTS, check_channels
from .errors import TrackingError, UsageError
from .layout import RESERVED_CHANNELS
from .notebook import Notebook, kernel_alias, load_notebook
from .parameters import check_names, effective_parameters, given_only, recorded
from .redact import looks_secret
from .result import RunResult, interruption
from .spec import JOB_NAME_PATTERN, JobSpec, RunRequest, job_name
from .storage import check_input, is_s3
from .tracking import TAG_ATTEMPT, TAG_OUTPUT, Tracker, absolute_uri, default_tracking_uri, run_tags

log = logging.getLogger("batcat_nb")

DEFAULT_KERNEL = "python3"


def resolve_spec(request: RunRequest, notebook: Notebook | None = None) -> JobSpec:
    """Everything about the run, checked before anything costly starts; ``notebook``: what runs
    instead of the file ``request.notebook`` holds now (a rerun's recorded notebook)."""
    config = resolve(
        CoreConfig,
        "",
        {
            "backend": request.backend,
            "experiment": request.experiment,
            "tracking_uri": request.tracking_uri,
            "output_dir": request.output_dir,
            "kernel": request.kernel,
            "timeout": request.timeout,
            "retries": request.retries,
        },
    )
    given_notebook, notebook = notebook, notebook or load_notebook(request.notebook)
    effective = effective_parameters(
        notebook, request.parameters, allow_unknown=request.allow_unknown_parameters
    )
    job_secrets = _check_secrets(request, notebook)
    _check_channels(request.inputs, request.outputs)
    name = request.job_name or job_name(notebook.name)
    if not JOB_NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"job name {name!r}: use 1 to 63 letters, digits and '-', starting with a letter or digit"
        )
    declared = [p.name for p in notebook.parameters() or []]
    spec = JobSpec(
        job_name=name,
        notebook=str(notebook.path.resolve()),
        notebook_sha256=notebook.sha256,
        kernel=kernel_alias(config.kernel or notebook.kernel_name or DEFAULT_KERNEL),
        backend=config.backend,
        experiment=config.experiment or notebook.name,
        parameters=given_only(effective),
        recorded_parameters=recorded(effective),
        inputs={k: v if is_s3(v) else str(Path(v).resolve()) for k, v in request.inputs.items()},
        outputs={k: v if is_s3(v) else str(Path(v).resolve()) for k, v in request.outputs.items()},
        output_dir=str((Path(config.output_dir) / name).resolve()),
        tracking_uri=absolute_uri(config.tracking_uri) if config.tracking_uri else default_tracking_uri(),
        timeout=config.timeout,
        execution_timeout=request.execution_timeout,
        log_output=request.log_output,
        progress=request.progress,
        declared_parameters=declared,
        secrets=job_secrets,
        tags=dict(request.tags),
        backend_options=dict(request.backend_options),
        retries=config.retries,
        notebook_content=notebook.content if given_notebook or notebook.is_text else None,
    )
    channels = {**spec.inputs, **spec.outputs}
    for parameter, channel_path in spec.channel_parameters().items():
        spec.recorded_parameters[parameter] = channels[channel_path.split("/", 1)[1]]
    spec.recorded_parameters.update(secrets.recorded(job_secrets))
    return spec


def _check_secrets(request: RunRequest, notebook: Notebook) -> dict[str, str]:
    """The request's secrets, checked; a secret-looking ``-p`` value is warned about."""
    job_secrets = secrets.normalise(request.secrets)
    check_names(notebook, job_secrets, allow_unknown=request.allow_unknown_parameters)
    for name in request.parameters:
        if name in job_secrets:
            raise UsageError(f"'{name}' is given both as a parameter and as --secret; keep --secret")
        if looks_secret(name):
            _warn_secret_like(name)
    return job_secrets


@functools.cache  # once per name, not once per run of a sweep
def _warn_secret_like(name: str) -> None:
    log.warning(
        "parameter '%s' looks like a secret: its value is written into the notebook, its HTML "
        "and the MLflow run; pass it with --secret %s (its value read from $%s) instead",
        name,
        name,
        name,
    )


def validate(backend: Backend, spec: JobSpec) -> None:
    """Everything the backend must accept before anything starts."""
    secrets.check_sources(
        spec.secrets, getattr(backend, "secret_sources", secrets.LOCAL_SOURCES), backend.name
    )
    secrets.launcher_env(spec.secrets)  # a missing variable fails now, not in the job
    backend.validate(spec)


def submit(request: RunRequest, *, detached: bool = False) -> JobHandle:
    """Start the run and return its handle at once; ``detached``: the job must outlive this process."""
    return submit_spec(resolve_spec(request), detached=detached)


def submit_spec(spec: JobSpec, *, detached: bool = False) -> JobHandle:
    """Check what the backend and the inputs need, then start the resolved ``spec``."""
    backend = registry.get(spec.backend)
    if detached and not getattr(backend, "detachable", False):
        raise UsageError(
            f"a {spec.backend} job ends with this command; use `batcat run`, or --backend sagemaker"
        )
    if detached and spec.retries:
        log.warning("--retries is ignored: with no launcher left to wait, nothing submits a job again")
        spec = replace(spec, retries=0)
    validate(backend, spec)
    for name, source in spec.inputs.items():
        check_input(name, source)
    tracker = tracker_for(backend, spec.tracking_uri)
    handle = start(backend, tracker, spec)
    reconcile_ended(tracker)  # while the job starts: runs whose launcher was killed
    return handle


def reconcile_ended(tracker: Tracker) -> None:
    """Complete the store's runs whose job ended without its launcher (``batcat runs reconcile``)."""
    from .reconcile import reconcile_store

    try:
        remote = getattr(tracker, "reconcile", None)  # the agent's, where MLflow is loaded
        remote() if remote is not None else reconcile_store(tracker)
    except Exception as exc:  # never a reason to fail this run
        log.warning("could not complete the runs of ended jobs: %s", exc)


def start(backend: Backend, tracker: Tracker, spec: JobSpec, tags: dict[str, str] | None = None) -> JobHandle:
    """Submit ``spec`` and create its MLflow run meanwhile; the job learns its run once it exists."""
    tags = {**replay.record(spec), **(tags or {})}
    handle = backend.submit(spec)  # the job starts while MLflow loads
    try:
        run_id, experiment_id = tracker.start_run(
            experiment=spec.experiment,
            run_name=spec.job_name,
            params=spec.recorded_parameters,
            tags={**tags_for(spec), **tags},
        )
    except (TrackingError, KeyboardInterrupt):
        handle.cancel()
        raise
    handle.attach(tracker, run_id, experiment_id)
    return handle


def tracker_for(backend: Backend, uri: str) -> Tracker:
    """The backend's own way to reach the store (the local agent), else a Tracker here."""
    tracker = getattr(backend, "tracker", None)
    return tracker(uri) if tracker is not None else Tracker(uri)


def tags_for(spec: JobSpec) -> dict[str, str]:
    """The tags of a job's MLflow run: provenance, where its output goes, the user's own."""
    provenance = run_tags(
        notebook_path=Path(spec.notebook),
        notebook_sha256=spec.notebook_sha256,
        backend=spec.backend,
        kernel=spec.kernel,
        job_name=spec.job_name,
    )
    return {**provenance, TAG_OUTPUT: spec.output_dir, TAG_ATTEMPT: "1", **spec.tags}


def run(request: RunRequest) -> RunResult:
    """Run to the end; Ctrl-C stops the job, keeps its partial notebook and marks it KILLED."""
    return wait(submit(request))


def wait(handle: JobHandle) -> RunResult:
    """Wait for a submitted job, submitting it again after an infrastructure failure while its
    ``retries`` allow; Ctrl-C stops it, keeps its partial notebook, marks it KILLED."""
    return retry.wait_with_retries(handle, _wait_once, resubmit)


def resubmit(handle: JobHandle, job_name: str, backend: Backend | None = None) -> JobHandle:
    """The same job under a new name, attached to the same MLflow run; ``backend``: the one
    that submitted it when that one holds state (a sweep's warm workers)."""
    assert handle.tracker is not None and handle.spec.run_id and handle.spec.experiment_id
    backend = backend or registry.get(handle.spec.backend)
    again = backend.submit(replace(handle.spec, job_name=job_name))
    again.attach(handle.tracker, handle.spec.run_id, handle.spec.experiment_id)
    return again


def _wait_once(handle: JobHandle) -> RunResult:
    try:
        return handle.wait()
    except KeyboardInterrupt as exc:
        reason = interruption(exc)
        log.warning("stopping %s (%s)...", handle.job_name, reason)
        handle.cancel(reason)
        return handle.wait()


def _check_channels(inputs: dict[str, str], outputs: dict[str, str]) -> None:
    check_channels(inputs, outputs)
    for name in [*inputs, *outputs]:
        if name in RESERVED_CHANNELS:
            raise UsageError(
                f"'{name}' is a channel batcat uses itself ({', '.join(sorted(RESERVED_CHANNELS))}); "
                "name your input or output differently"
            )
    if len(inputs) > MAX_INPUTS - 2:
        raise UsageError(
            f"{len(inputs)} inputs: a job takes at most {MAX_INPUTS - 2} "
            "(SageMaker allows 10 and batcat uses two); put related files under one directory"
        )
