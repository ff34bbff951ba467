"""``batcat submit|status|logs|stop|list|download``: jobs that outlive the command (SageMaker).

``submit`` takes the options of ``batcat run`` plus the backend options below and returns once
the job exists; the other commands find a processing job by name. ``download`` fetches the
executed notebook and outputs and completes the job's MLflow run from its manifest, which
nobody else does for a job submitted without waiting.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .errors import UsageError

# option name -> SageMakerConfig key; only values given on the command line are passed on.
SAGEMAKER_OPTIONS = {
    "role": "role",
    "s3_prefix": "s3_prefix",
    "region": "region",
    "instance_type": "instance_type",
    "instance_count": "instance_count",
    "volume_size": "volume_size",
    "max_runtime": "max_runtime",
    "subnets": "subnets",
    "security_groups": "security_groups",
    "kms_key": "kms_key",
}
SHARED_OPTIONS = {"image": "image", "env": "env", "include": "include"}  # Docker takes them too


def shared_backend_options(command: Any) -> Any:
    """``--image``, ``--env``, ``--include``: what the container backends (Docker, SageMaker) share."""
    options = [
        click.option("--image", default=None, metavar="URI", help="Runner image (SageMaker: its ECR URI)."),
        click.option(
            "--env",
            "env",
            multiple=True,
            metavar="NAME=VALUE",
            help="Environment variable of the job (repeatable).",
        ),
        click.option(
            "--include",
            "include",
            multiple=True,
            metavar="PATH",
            help="File or directory shipped beside the notebook (helper modules, configs).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def sagemaker_options(command: Any) -> Any:
    """The SageMaker options of ``batcat run`` and ``batcat submit``."""
    options = [
        click.option("--role", default=None, metavar="ARN", help="SageMaker: IAM role the job runs as."),
        click.option(
            "--s3-prefix",
            default=None,
            metavar="S3URI",
            help="SageMaker: s3://bucket/prefix for the job's files.",
        ),
        click.option("--region", default=None, help="SageMaker: AWS region (default: the environment's)."),
        click.option("--instance-type", default=None, help="SageMaker: instance type (default ml.m5.large)."),
        click.option(
            "--instance-count", type=click.IntRange(min=1), default=None, help="SageMaker: instances."
        ),
        click.option(
            "--volume-size", type=click.IntRange(min=1), default=None, help="SageMaker: volume, GB."
        ),
        click.option(
            "--max-runtime", type=click.IntRange(min=1), default=None, help="SageMaker: stop after S seconds."
        ),
        click.option("--subnet", "subnets", multiple=True, help="SageMaker: VPC subnet (repeatable)."),
        click.option(
            "--security-group",
            "security_groups",
            multiple=True,
            help="SageMaker: VPC security group (repeatable).",
        ),
        click.option("--kms-key", default=None, help="SageMaker: KMS key for outputs and volume."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def backend_options(command: Any) -> Any:
    """Every backend option of ``batcat run``: the shared ones and SageMaker's."""
    return shared_backend_options(sagemaker_options(command))


def backend_options_from(options: dict[str, Any]) -> dict[str, Any]:
    """The parsed backend options to ``RunRequest.backend_options``: only those given."""
    from .build_cli import DOCKER_OPTIONS
    from .cli import _pairs

    found: dict[str, Any] = {}
    for option, key in {**SAGEMAKER_OPTIONS, **SHARED_OPTIONS, **DOCKER_OPTIONS}.items():
        value = options.get(option)
        if value is None or value == () or value == []:
            continue
        if option == "env":
            value = _pairs(value, "--env")
        elif isinstance(value, tuple):
            value = list(value)
        found[key] = value
    return found


def region_option(command: Any) -> Any:
    return click.option("--region", default=None, help="AWS region (default: the environment's).")(command)


def _region(region: str | None) -> str:
    from . import aws

    found = aws.resolve_region(region)
    aws.check_credentials(found)
    return found


def submit_command() -> click.Command:
    """``batcat submit``: the options of ``batcat run`` (built when the CLI is assembled)."""
    from .cli import run_options

    @click.command(name="submit")
    @run_options
    def submit(**options: Any) -> None:
        """Submit NOTEBOOK (default backend: sagemaker) and return once the job exists."""
        from .cli import request_from_options

        request = request_from_options(options)
        request.backend = options["backend"] or "sagemaker"
        request.backend_options = backend_options_from(options)
        submit_and_report(request)

    if not any(param.name == "role" for param in submit.params):  # until run_options carries them
        backend_options(submit)
    return submit


def submit_and_report(request: Any) -> Any:
    """Submit without waiting; print the job's name and how to follow it (``run --no-wait`` too)."""
    from . import api

    if request.backend == "local":
        raise UsageError("a local job ends with this command; use `batcat run`, or --backend sagemaker")
    handle = api.submit(request)
    click.echo(handle.job_name)
    click.echo(
        f"  follow   batcat logs {handle.job_name} --follow\n"
        f"  result   batcat download {handle.job_name}  (fetches the notebook, completes the MLflow run)",
        err=True,
    )
    return handle


@click.command()
@click.argument("job")
@region_option
def status(job: str, region: str | None) -> None:
    """Status of processing job JOB: state, times, failure reason, outputs."""
    from .backends import sagemaker_jobs

    found = sagemaker_jobs.describe_job(job, _region(region))
    state = found.get("ProcessingJobStatus", "?")
    rows = [("status", f"{state} ({sagemaker_jobs.STATUS.get(state, '?')})")]
    for label, key in (
        ("created", "CreationTime"),
        ("started", "ProcessingStartTime"),
        ("ended", "ProcessingEndTime"),
    ):
        if found.get(key):
            rows.append((label, str(found[key])))
    for label, key in (("failure", "FailureReason"), ("message", "ExitMessage")):
        if found.get(key):
            rows.append((label, found[key].strip().replace("\n", " ")[:500]))
    image = found.get("AppSpecification", {}).get("ImageUri")
    if image:
        rows.append(("image", image))
    rows += [(f"output {name}", uri) for name, uri in sagemaker_jobs.output_uris(found).items()]
    tags = sagemaker_jobs.job_tags(found, found.get("ProcessingJobArn", "").split(":")[3] or region)
    if tags.get(sagemaker_jobs.JOB_TAG_RUN_ID):
        rows.append(("mlflow run", tags[sagemaker_jobs.JOB_TAG_RUN_ID]))
    width = max(len(label) for label, _ in rows)
    click.echo(job)
    for label, value in rows:
        click.echo(f"  {label:<{width}}  {value}")


@click.command()
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@region_option
def logs(job: str, follow: bool, region: str | None) -> None:
    """CloudWatch log of processing job JOB."""
    from . import aws
    from .backends import sagemaker_jobs

    where = _region(region)
    follower = sagemaker_jobs.LogFollower(job, where)
    if not follow:
        sagemaker_jobs.describe_job(job, where)  # a name that is no job is said so
        for line in follower.poll():
            click.echo(line)
        return
    for delay in aws.backoff(first=1.0, cap=5.0):
        state = sagemaker_jobs.describe_job(job, where).get("ProcessingJobStatus")
        for line in follower.poll():
            click.echo(line)
        if state in sagemaker_jobs.TERMINAL:
            for line in follower.poll():
                click.echo(line)
            click.echo(f"{job} {state}", err=True)
            return
        import time

        time.sleep(delay)


@click.command()
@click.argument("job")
@region_option
def stop(job: str, region: str | None) -> None:
    """Stop processing job JOB (its MLflow run ends KILLED)."""
    from .backends import sagemaker_jobs

    if sagemaker_jobs.stop_job(job, _region(region)):
        click.echo(f"stopping {job}")
    else:
        click.echo(f"{job} had already ended")


@click.command(name="list")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--status",
    "state",
    type=click.Choice(["InProgress", "Completed", "Failed", "Stopping", "Stopped"]),
    default=None,
)
@click.option("--name", default=None, help="Only jobs whose name contains this.")
@region_option
def list_(limit: int, state: str | None, name: str | None, region: str | None) -> None:
    """Recent processing jobs, newest first."""
    from .backends import sagemaker_jobs

    jobs = sagemaker_jobs.list_jobs(_region(region), limit=limit, status=state, name=name)
    if not jobs:
        click.echo("no processing jobs")
        return
    width = max(len(j["ProcessingJobName"]) for j in jobs)
    for found in jobs:
        created = found.get("CreationTime")
        when = created.strftime("%Y-%m-%d %H:%M:%S") if isinstance(created, datetime) else str(created or "")
        line = f"{found['ProcessingJobName']:<{width}}  {found.get('ProcessingJobStatus', '?'):<10}  {when}"
        click.echo(line.rstrip())


@click.command()
@click.argument("job")
@click.option("--output-dir", "-o", default=None, help="Where to put it (default: batcat-runs/JOB).")
@region_option
def download(job: str, output_dir: str | None, region: str | None) -> None:
    """Fetch JOB's executed notebook and outputs; complete its MLflow run."""
    from . import aws, storage
    from .backends import sagemaker_jobs
    from .layout import NOTEBOOK_CHANNEL

    where = _region(region)
    found = sagemaker_jobs.describe_job(job, where)
    destination = Path(output_dir or Path("batcat-runs") / job).resolve()
    s3 = aws.client("s3", where)
    counts = {}
    for name, uri in sagemaker_jobs.output_uris(found).items():
        target = destination if name == NOTEBOOK_CHANNEL else destination / name
        try:
            counts[name] = storage.download(uri, target, s3, folder=True)
        except Exception as exc:
            raise aws.translate(exc, f"downloading output '{name}' from {uri}") from None
    click.echo(f"{job} -> {destination}")
    for name, count in counts.items():
        click.echo(f"  {name:<10} {count} file(s)")
    state = found.get("ProcessingJobStatus")
    if state in sagemaker_jobs.TERMINAL:
        outcome = complete_run(found, destination, where)
        if outcome:
            click.echo(f"  mlflow run {outcome}")
    else:
        click.echo(f"  {job} is still {state}: download again once it has ended", err=True)


def complete_run(description: dict[str, Any], output_dir: Path, region: str) -> str | None:
    """Complete the job's MLflow run from the downloaded manifest (once; again changes nothing)."""
    import time

    from .backends import sagemaker_jobs
    from .manifest import FAILED, KILLED, Manifest
    from .tracking import Tracker, default_tracking_uri

    tags = sagemaker_jobs.job_tags(description, region)
    run_id = tags.get(sagemaker_jobs.JOB_TAG_RUN_ID)
    if not run_id:
        return None
    tracker = Tracker(tags.get(sagemaker_jobs.JOB_TAG_TRACKING_URI) or default_tracking_uri())
    try:
        manifest = Manifest.read(output_dir)
    except (OSError, ValueError):
        state = description.get("ProcessingJobStatus")
        reason = "; ".join(filter(None, [description.get("FailureReason"), description.get("ExitMessage")]))
        now = time.time()
        manifest = Manifest(
            description["ProcessingJobName"],
            status=KILLED if state == "Stopped" else FAILED,
            reason=reason or f"the job ended {state} without a manifest",
            started_at=now,
            ended_at=now,
        )
    tracker.complete_run(run_id, manifest, output_dir if output_dir.is_dir() else None)
    return f"{run_id} {manifest.status}"


COMMANDS = [status, logs, stop, list_, download]


def register(group: click.Group) -> None:
    """Add the job commands to the ``batcat`` group."""
    group.add_command(submit_command())
    for command in COMMANDS:
        group.add_command(command)
