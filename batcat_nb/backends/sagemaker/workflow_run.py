"""Operating a deployed workflow: start executions, follow them, list them, complete their MLflow runs.

A step's job in an execution is found by name: ``<job prefix>-<attempt>-<md5 of the execution
ARN>``, the name the state machine gives it (``stepfunctions.job_name``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...errors import UsageError, did_you_mean
from ...job_run import TAG_EXECUTION, TAG_STEP, TAG_STEP_RUN, TAG_WORKFLOW
from . import aws
from . import stepfunctions as sfn
from .workflow_deploy import AwsCalls, NotFound, deployment
from .workflow_plan import Names

log = logging.getLogger("batcat_nb")

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
TAG_EXECUTION_ARN = "batcat.workflow.execution_arn"  # the execution's parent run only


def execution_name(workflow: str) -> str:
    """``<workflow>-<UTC time>-<random>``: readable, unique, at most 80 characters."""
    return f"{sfn.slug(workflow, 56)}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def trigger(name: str, given: dict[str, Any], region: str) -> tuple[str, dict[str, Any]]:
    """Start an execution with ``given`` parameters (checked against the workflow's); its ARN."""
    record, calls = deployment(name, region)
    known = record["parameters"]
    for parameter in given:
        if parameter not in known:
            raise UsageError(
                f"workflow {name!r} has no parameter '{parameter}'{did_you_mean(parameter, known)}; "
                f"declared: {', '.join(known) or 'none'}"
            )
        default = known[parameter]
        if not _same_kind(default, given[parameter]):
            raise UsageError(
                f"workflow {name!r}: parameter '{parameter}' expects {type(default).__name__} "
                f"(default {default!r}), got {given[parameter]!r}; pass a {type(default).__name__} value"
            )
    started = calls(
        "stepfunctions",
        "start_execution",
        stateMachineArn=record["state_machine"],
        name=execution_name(name),
        input=json.dumps({"parameters": given, "trigger": "request"}),
    )
    return str(started["executionArn"]), record


def _same_kind(default: Any, value: Any) -> bool:
    """Whether ``value`` can stand where the workflow's default ``default`` stands."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) == isinstance(value, bool) or default is None
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    return default is None or isinstance(value, type(default))


def run_id(execution_arn: str) -> str:
    return hashlib.md5(execution_arn.encode()).hexdigest()  # noqa: S324 - a name, not a secret


def step_jobs(record: dict[str, Any], execution_arn: str, calls: AwsCalls) -> dict[str, dict[str, Any]]:
    """Each step's latest job in the execution (its description), for the steps that have one."""
    found: dict[str, dict[str, Any]] = {}
    ident = run_id(execution_arn)
    for step in record["steps"]:
        for attempt in range(step["retries"] + 1):
            name = sfn.job_name(step["job_prefix"], attempt, ident)
            try:
                found[step["name"]] = calls("sagemaker", "describe_processing_job", ProcessingJobName=name)
            except NotFound:
                break
            except UsageError as exc:  # SageMaker says ValidationException for a missing job
                if "not find" in str(exc).lower() or "does not exist" in str(exc).lower():
                    break
                raise
    return found


def find_execution(record: dict[str, Any], execution: str, calls: AwsCalls) -> dict[str, Any]:
    """An execution of the workflow by name or ARN."""
    arn = execution
    if not execution.startswith("arn:"):
        arn = record["state_machine"].replace(":stateMachine:", ":execution:") + f":{execution}"
    try:
        return dict(calls("stepfunctions", "describe_execution", executionArn=arn))
    except NotFound:
        raise UsageError(
            f"workflow {record['workflow']!r} has no execution {execution!r}; "
            f"`batcat workflow status {record['workflow']}` lists them"
        ) from None


def executions(record: dict[str, Any], calls: AwsCalls, limit: int = 1000) -> list[dict[str, Any]]:
    """The workflow's executions, newest first."""
    found: list[dict[str, Any]] = []
    token: dict[str, str] = {}
    while len(found) < limit:
        page = calls(
            "stepfunctions",
            "list_executions",
            stateMachineArn=record["state_machine"],
            maxResults=min(1000, limit),
            **token,
        )
        found += page.get("executions", [])
        if not page.get("nextToken"):
            break
        token = {"nextToken": page["nextToken"]}
    return found[:limit]


def follow(
    record: dict[str, Any],
    execution_arn: str,
    calls: AwsCalls,
    echo: Callable[[str], None],
    poll: float = 5.0,
) -> str:
    """Print each step's job state as it changes and its log lines, until the execution ends."""
    from .jobs import LogFollower

    followers: dict[str, LogFollower] = {}
    seen: dict[str, str] = {}
    for delay in aws.backoff(first=min(1.0, poll), cap=poll):
        status = calls("stepfunctions", "describe_execution", executionArn=execution_arn)["status"]
        for step, job in step_jobs(record, execution_arn, calls).items():
            name, state = job["ProcessingJobName"], job["ProcessingJobStatus"]
            if seen.get(step) != f"{name} {state}":
                seen[step] = f"{name} {state}"
                echo(f"[{step}] {name} {state}")
            follower = followers.setdefault(step, LogFollower(name, calls.region))
            for line in follower.poll():
                echo(f"[{step}] {line}")
        if status in TERMINAL:
            return str(status)
        time.sleep(delay)
    raise AssertionError("unreachable")


def deployed(region: str) -> Iterator[tuple[str, str]]:
    """(workflow, state machine ARN) of every deployed workflow, by its tag."""
    calls = AwsCalls(region)
    token: dict[str, str] = {}
    while True:
        page = calls("stepfunctions", "list_state_machines", **token)
        for machine in page.get("stateMachines", []):
            if not machine["name"].startswith("batcat-"):
                continue
            found = calls("stepfunctions", "list_tags_for_resource", resourceArn=machine["stateMachineArn"])
            for tag in found.get("tags", []):
                if tag["key"] == TAG_WORKFLOW and Names(tag["value"]).state_machine == machine["name"]:
                    yield tag["value"], machine["stateMachineArn"]
        if not page.get("nextToken"):
            return
        token = {"nextToken": page["nextToken"]}


def sync(name: str, region: str, tracking_uri: str, echo: Callable[[str], None]) -> int:
    """Complete the MLflow runs of the workflow's executions from their manifests in S3.

    One parent run per execution, one child per step that left a manifest; runs already
    complete are left alone, so a second sync changes nothing. Returns the steps completed now.
    """
    from ...layout import NOTEBOOK_CHANNEL
    from ...manifest import Manifest
    from ...storage import download
    from ...sweeps import TAG_PARENT
    from ...tracking import TAG_COMPLETED, TAG_JOB_NAME, Tracker

    record, calls = deployment(name, region)
    tracker = Tracker(tracking_uri)
    experiment = tracker.experiment_id(name)
    s3 = aws.client("s3", region)
    completed = 0
    for execution in executions(record, calls):
        if execution["status"] == "RUNNING":
            continue
        exec_name = execution["name"]
        parent = tracker.find_run(experiment, TAG_EXECUTION_ARN, execution["executionArn"])
        if parent is None:
            parent, _ = tracker.start_run(
                experiment=name,
                run_name=exec_name,
                params=_execution_parameters(record, exec_name, calls),
                tags={
                    TAG_WORKFLOW: name,
                    TAG_EXECUTION: exec_name,
                    TAG_EXECUTION_ARN: execution["executionArn"],
                },
            )
        for step in record["steps"]:
            key = f"{exec_name}/{step['name']}"
            uri = f"{record['root']}executions/{exec_name}/{step['folder']}/output/{NOTEBOOK_CHANNEL}/"
            with tempfile.TemporaryDirectory(prefix="batcat-sync-") as tmp:
                if not download(uri, Path(tmp), s3, folder=True):
                    _end_lost_runs(tracker, experiment, key, None)
                    continue
                manifest = Manifest.read(Path(tmp))
                child = tracker.find_run(experiment, TAG_JOB_NAME, manifest.job_name)  # its attempt's
                _end_lost_runs(tracker, experiment, key, child)
                if child is None:
                    child, _ = tracker.start_run(
                        experiment=name,
                        run_name=step["name"],
                        params=manifest.parameters,
                        tags={
                            TAG_PARENT: parent,
                            TAG_WORKFLOW: name,
                            TAG_STEP: step["name"],
                            TAG_EXECUTION: exec_name,
                            TAG_STEP_RUN: key,
                            TAG_JOB_NAME: manifest.job_name,
                        },
                    )
                tags = tracker.run_tags(child)
                if tags.get(TAG_PARENT) != parent:  # a run the job recorded itself joins its execution
                    tracker.client.set_tag(child, TAG_PARENT, parent)
                if tags.get(TAG_COMPLETED) == "true":
                    continue
                tracker.complete_run(child, manifest, Path(tmp))
                completed += 1
                echo(f"  {exec_name} {step['name']}: {manifest.status}")
        if tracker.client.get_run(parent).info.status == "RUNNING":
            status = "FINISHED" if execution["status"] == "SUCCEEDED" else "FAILED"
            tracker.end_run(parent, status, {TAG_COMPLETED: "true"}, {})
    echo(f"{name}: {completed} step run(s) completed in {tracking_uri}")
    return completed


def _end_lost_runs(tracker: Any, experiment: str, key: str, keep: str | None) -> None:
    """FAILED for the step's runs a job left RUNNING (its instance lost), but ``keep``'s: the
    execution has ended, and a run never stays RUNNING after its job."""
    found = tracker.client.search_runs(
        [experiment], filter_string=f"tags.`{TAG_STEP_RUN}` = '{key}' and attributes.status = 'RUNNING'"
    )
    for run in found:
        if run.info.run_id != keep:
            tracker.fail_run(
                run.info.run_id, "FAILED", "its job ended without completing it (see the job's log)"
            )


def _execution_parameters(record: dict[str, Any], execution: str, calls: AwsCalls) -> dict[str, Any]:
    """What the state machine wrote as the execution's parameters (none if it failed before)."""
    from ...storage import split_s3

    bucket, key = split_s3(f"{record['root']}executions/{execution}/parameters.json")
    found = calls.find("s3", "get_object", Bucket=bucket, Key=key)
    return {} if found is None else dict(json.loads(found["Body"].read()))
