"""The SageMaker backend's command line: its options of ``batcat run`` and
``batcat status|logs|stop|list|download`` for processing jobs that outlive the command.

The commands find a processing job by name. ``download`` fetches the executed notebook and
outputs and completes the job's MLflow run from its manifest, which nobody else does for a job
submitted without waiting (``batcat submit`` or ``batcat run --no-wait``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ... import contract
from ...errors import UnsafePath

SECTION = "SageMaker"
# The SageMaker options of ``batcat run`` and ``batcat submit``: click's arguments; each one's
# destination is its SageMakerConfig key.
RUN_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--role",), {"default": None, "metavar": "ARN", "help": "IAM role the job runs as."}),
    (
        ("--s3-prefix",),
        {"default": None, "metavar": "S3URI", "help": "s3://bucket/prefix for the job's files."},
    ),
    (("--region",), {"default": None, "help": "AWS region (default: the environment's)."}),
    (("--instance-type",), {"default": None, "help": "Instance type (default ml.m5.large)."}),
    (("--instance-count",), {"type": click.IntRange(min=1), "default": None, "help": "Instances."}),
    (("--volume-size",), {"type": click.IntRange(min=1), "default": None, "help": "Volume, GB."}),
    (("--max-runtime",), {"type": click.IntRange(min=1), "default": None, "help": "Stop after S seconds."}),
    (("--subnet", "subnets"), {"multiple": True, "help": "VPC subnet (repeatable)."}),
    (("--security-group", "security_groups"), {"multiple": True, "help": "VPC security group (repeatable)."}),
    (("--kms-key",), {"default": None, "help": "KMS key for outputs and volume."}),
]


def region_option(command: Any) -> Any:
    return click.option("--region", default=None, help="AWS region (default: the environment's).")(command)


def _region(region: str | None) -> str:
    from . import aws

    found = aws.resolve_region(region)
    aws.check_credentials(found)
    return found


@click.command()
@click.argument("job")
@region_option
def status(job: str, region: str | None) -> None:
    """Status of processing job JOB: state, times, failure reason, outputs."""
    from . import jobs as sagemaker_jobs

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
    if tags.get(contract.JOB_TAG_RUN_ID):
        rows.append(("mlflow run", tags[contract.JOB_TAG_RUN_ID]))
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
    from . import jobs as sagemaker_jobs

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
    from . import jobs as sagemaker_jobs

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
    from . import jobs as sagemaker_jobs

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
    from ... import storage
    from ...layout import NOTEBOOK_CHANNEL
    from . import aws
    from . import jobs as sagemaker_jobs

    where = _region(region)
    found = sagemaker_jobs.describe_job(job, where)
    destination = Path(output_dir or Path("batcat-runs") / job).resolve()
    s3 = aws.client("s3", where)
    counts = {}
    for name, uri in sagemaker_jobs.output_uris(found).items():
        target = destination if name == NOTEBOOK_CHANNEL else destination / name
        try:
            counts[name] = storage.download(uri, target, s3, folder=True)
        except UnsafePath:
            raise
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

    from ...manifest import FAILED, KILLED, Manifest
    from ...tracking import Tracker
    from . import jobs as sagemaker_jobs

    tags = sagemaker_jobs.job_tags(description, region)
    run_id = tags.get(contract.JOB_TAG_RUN_ID)
    if not run_id:
        return None
    tracker = Tracker(sagemaker_jobs.tracking_uri(tags))
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
