"""``batcat workflow deploy|trigger|status|list|delete|sync|policy``: workflows on AWS Step Functions.

Thin: each command parses, calls ``backends.sagemaker.workflow_*`` and prints. The options
follow the SageMaker backend's (``[tool.batcat.sagemaker]``, ``BATCAT_SAGEMAKER_*``); the state
machine's own come from ``[tool.batcat.stepfunctions]`` / ``BATCAT_STEPFUNCTIONS_*``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .exit_codes import EXIT_FAILED


def _region(region: str | None) -> str:
    from ..backends.sagemaker import aws

    found = aws.resolve_region(region)
    aws.check_credentials(found)
    return found


def _sagemaker_region(region: str | None) -> str | None:
    from ..backends.sagemaker.backend import SageMakerConfig
    from ..config import resolve

    return region or resolve(SageMakerConfig, "sagemaker").region


region_option = click.option("--region", default=None, help="AWS region (default: the environment's).")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--role", default=None, metavar="ARN", help="IAM role the steps' jobs run as.")
@click.option("--s3-prefix", default=None, metavar="S3URI", help="s3://bucket/prefix for code and outputs.")
@click.option("--image", default=None, metavar="URI", help="Runner image URI (batcat build --push).")
@click.option("--execution-role", default=None, metavar="ARN", help="Role the state machine runs as.")
@click.option("--create-roles", is_flag=True, help="Create both roles (see `batcat workflow policy`).")
@click.option(
    "--job-tracking-uri",
    default=None,
    metavar="URI",
    help="MLflow server as the jobs reach it: each step records its own run there "
    "(default: the configured store, when a job on AWS can reach it).",
)
@region_option
def deploy(
    file: str,
    role: str | None,
    s3_prefix: str | None,
    image: str | None,
    execution_role: str | None,
    create_roles: bool,
    job_tracking_uri: str | None,
    region: str | None,
) -> None:
    """Deploy workflow FILE to AWS Step Functions (again: only what changed)."""
    from ..backends.sagemaker import workflow_deploy, workflow_iam, workflow_plan
    from ..config import resolve
    from ..workflow.loader import load_workflow

    workflow = load_workflow(file)
    where = _region(_sagemaker_region(region))
    options: dict[str, Any] = {"role": role, "s3_prefix": s3_prefix, "image": image, "region": where}
    config = resolve(
        workflow_plan.StepFunctionsConfig,
        "stepfunctions",
        {"execution_role": execution_role, "job_tracking_uri": job_tracking_uri},
    )
    changes: list[str] = []
    if create_roles:
        if role or execution_role:
            raise click.UsageError("--create-roles makes both roles: leave out --role and --execution-role")
        prefix = resolve(workflow_plan.SageMakerConfig, "sagemaker", {"s3_prefix": s3_prefix}).s3_prefix
        root = workflow_plan.workflow_root(workflow.name, prefix)
        calls = workflow_deploy.AwsCalls(where)
        options["role"], config.execution_role = workflow_iam.create_roles(
            workflow.name, root, calls, changes
        )
        for change in changes:
            click.echo(f"  {change}")
    plan = workflow_plan.build(workflow, options, config)
    workflow_deploy.deploy(plan, click.echo)


@click.command()
@click.argument("name")
@click.option("-p", "--parameters", "values", nargs=2, multiple=True, metavar="NAME VALUE", help="Parameter.")
@click.option("--wait", is_flag=True, help="Follow the execution, step by step, with the jobs' logs.")
@region_option
def trigger(name: str, values: tuple[tuple[str, str], ...], wait: bool, region: str | None) -> None:
    """Start an execution of deployed workflow NAME."""
    from ..backends.sagemaker import workflow_run
    from ..parameters import collect

    where = _region(_sagemaker_region(region))
    arn, record = workflow_run.trigger(name, collect(values=values), where)
    click.echo(f"started {arn.rsplit(':', 1)[-1]} ({arn})")
    if not wait:
        return
    from ..backends.sagemaker.workflow_deploy import AwsCalls

    status = workflow_run.follow(record, arn, AwsCalls(where), click.echo)
    click.echo(f"{name} {arn.rsplit(':', 1)[-1]}: {status}")
    if status != "SUCCEEDED":
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("name")
@click.argument("execution", required=False)
@region_option
def status(name: str, execution: str | None, region: str | None) -> None:
    """Recent executions of NAME, or one EXECUTION step by step."""
    from ..backends.sagemaker import workflow_run
    from ..backends.sagemaker.workflow_deploy import deployment

    record, calls = deployment(name, _region(_sagemaker_region(region)))
    if execution is None:
        click.echo(f"{name}  {record['state_machine']}")
        found = workflow_run.executions(record, calls, limit=20)
        if not found:
            click.echo("  no executions yet: `batcat workflow trigger NAME`")
        for item in found:
            click.echo(f"  {item['name']:<48} {item['status']:<10} {item['startDate']:%Y-%m-%d %H:%M:%S}")
        return
    described = workflow_run.find_execution(record, execution, calls)
    click.echo(f"{described['name']}  {described['status']}")
    jobs = workflow_run.step_jobs(record, described["executionArn"], calls)
    for step in record["steps"]:
        job = jobs.get(step["name"])
        state = f"{job['ProcessingJobName']} {job['ProcessingJobStatus']}" if job else "not started"
        click.echo(f"  {step['name']:<20} {state}")
        if job and job.get("FailureReason"):
            click.echo(f"  {'':<20} {job['FailureReason'].splitlines()[0][:200]}")
    if described["status"] != "RUNNING":
        click.echo(f"  outputs under {record['root']}executions/{described['name']}/")


@click.command(name="list")
@region_option
def list_(region: str | None) -> None:
    """Deployed workflows."""
    from ..backends.sagemaker import workflow_run

    found = list(workflow_run.deployed(_region(_sagemaker_region(region))))
    if not found:
        click.echo("no workflows deployed: `batcat workflow deploy FILE`")
    for name, arn in found:
        click.echo(f"{name:<40} {arn}")


@click.command()
@click.argument("name")
@region_option
def delete(name: str, region: str | None) -> None:
    """Remove what `deploy` created for NAME (execution outputs stay in S3)."""
    from ..backends.sagemaker import workflow_deploy

    workflow_deploy.delete(name, _region(_sagemaker_region(region)), click.echo)


@click.command()
@click.argument("name")
@click.option("--tracking-uri", default=None, help="MLflow store (default: the project's).")
@region_option
def sync(name: str, tracking_uri: str | None, region: str | None) -> None:
    """Complete the MLflow runs of NAME's executions from their manifests in S3."""
    from ..backends.sagemaker import workflow_run
    from ..config import CoreConfig, resolve
    from ..tracking import default_tracking_uri

    uri = tracking_uri or resolve(CoreConfig, "").tracking_uri or default_tracking_uri()
    workflow_run.sync(name, _region(_sagemaker_region(region)), uri, click.echo)


@click.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--s3-prefix", default=None, metavar="S3URI", help="s3://bucket/prefix of the workflow.")
def policy(file: str | None, s3_prefix: str | None) -> None:
    """Print the IAM policies the job role and the state machine's role need (FILE: its names)."""
    from ..backends.sagemaker import workflow_iam, workflow_plan
    from ..config import resolve
    from ..storage import split_s3

    name, topic = "WORKFLOW", None
    if file:
        from ..workflow.loader import load_workflow

        workflow = load_workflow(file)
        name, topic = workflow.name, workflow.notify
    prefix = resolve(workflow_plan.SageMakerConfig, "sagemaker", {"s3_prefix": s3_prefix}).s3_prefix
    bucket, key = split_s3(workflow_plan.workflow_root(name, prefix or "s3://BUCKET/PREFIX"))
    for title, document in workflow_iam.policies(name, bucket, key, topic=topic).items():
        click.echo(f"# {title}")
        click.echo(json.dumps(document, indent=2))


COMMANDS = [deploy, trigger, status, list_, delete, sync, policy]
