"""The one place a run is resolved, validated, tracked and handed to a backend.

Front ends (CLI, magics, ``batcat_nb.run``) build a RunRequest and call ``submit`` or ``run``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .backends import registry
from .backends.base import Backend, JobHandle
from .config import CoreConfig, resolve
from .contract import MAX_INPUTS, check_channels
from .errors import TrackingError, UsageError
from .layout import RESERVED_CHANNELS
from .notebook import kernel_alias, load_notebook
from .parameters import effective_parameters, given_only, recorded
from .result import INTERRUPTED, RunResult
from .spec import JobSpec, RunRequest, job_name
from .storage import check_input, is_s3
from .tracking import TAG_OUTPUT, Tracker, default_tracking_uri, run_tags

log = logging.getLogger("batcat_nb")

DEFAULT_KERNEL = "python3"


def resolve_spec(request: RunRequest) -> JobSpec:
    """Everything about the run, checked before anything costly starts."""
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
        },
    )
    notebook = load_notebook(request.notebook)
    effective = effective_parameters(
        notebook, request.parameters, allow_unknown=request.allow_unknown_parameters
    )
    _check_channels(request.inputs, request.outputs)
    name = job_name(notebook.name)
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
        tracking_uri=config.tracking_uri or default_tracking_uri(),
        timeout=config.timeout,
        execution_timeout=request.execution_timeout,
        log_output=request.log_output,
        progress=request.progress,
        declared_parameters=declared,
        tags=dict(request.tags),
        backend_options=dict(request.backend_options),
    )
    channels = {**spec.inputs, **spec.outputs}
    for parameter, channel_path in spec.channel_parameters().items():
        spec.recorded_parameters[parameter] = channels[channel_path.split("/", 1)[1]]
    return spec


def submit(request: RunRequest, *, detached: bool = False) -> JobHandle:
    """Start the run and return its handle at once; ``detached``: the job must outlive this process."""
    spec = resolve_spec(request)
    backend = registry.get(spec.backend)
    if detached and not getattr(backend, "detachable", False):
        raise UsageError(
            f"a {spec.backend} job ends with this command; use `batcat run`, or --backend sagemaker"
        )
    backend.validate(spec)
    for name, source in spec.inputs.items():
        check_input(name, source)
    return start(backend, tracker_for(backend, spec.tracking_uri), spec)


def start(backend: Backend, tracker: Tracker, spec: JobSpec, tags: dict[str, str] | None = None) -> JobHandle:
    """Submit ``spec`` and create its MLflow run meanwhile; the job learns its run once it exists."""
    handle = backend.submit(spec)  # the job starts while MLflow loads
    try:
        run_id, experiment_id = tracker.start_run(
            experiment=spec.experiment,
            run_name=spec.job_name,
            params=spec.recorded_parameters,
            tags={**tags_for(spec), **(tags or {})},
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
    return {**provenance, TAG_OUTPUT: spec.output_dir, **spec.tags}


def run(request: RunRequest) -> RunResult:
    """Run to the end; Ctrl-C stops the job, keeps its partial notebook and marks it KILLED."""
    return wait(submit(request))


def wait(handle: JobHandle) -> RunResult:
    """Wait for a submitted job; Ctrl-C stops it, keeps its partial notebook, marks it KILLED."""
    try:
        return handle.wait()
    except KeyboardInterrupt:
        log.warning("stopping %s (Ctrl-C)...", handle.job_name)
        handle.cancel(INTERRUPTED)
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
