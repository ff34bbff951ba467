"""A workflow as one Step Functions state machine (Amazon States Language, as a dict).

The state machine only calls AWS through ``aws-sdk`` integrations, so it runs the same on AWS
and in moto's interpreter:

- ``Trigger``: the execution's input is a request (``{"parameters": {...}}``, from
  ``batcat workflow trigger`` or anyone calling StartExecution), a schedule's input, or the raw
  EventBridge event of an S3 object created under ``on_s3`` (its URI becomes ``s3_uri``).
  ``Init`` merges the given parameters over the workflow's defaults and derives the run id
  (MD5 of the execution ARN) that makes every job name unique.
- ``Parameters``: ``s3:putObject`` writes the execution's parameters to
  ``<root>/executions/<execution>/parameters.json``.
- One ``Parallel`` state per dependency level (``Workflow.levels()``), one branch per step. A
  branch writes the step's ``job.json`` (its parameters included) with ``s3:putObject`` into the
  job's ``batcat`` input channel, creates the processing job with the request ``batcat run
  --backend sagemaker`` builds, then polls ``DescribeProcessingJob`` (Wait + Choice). A job that
  ends Failed for an infrastructure reason (``InternalServerError``/``CapacityError``) is created
  again under a new name while the step has retries left; a notebook's own error
  (``AlgorithmError``) or a stop fails the step, hence the execution.

Levels are exact for chains and fans; a step whose needs finish early still waits for its whole
level (the price of a definition with no polling between branches).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

EXECUTION = "@@EXECUTION@@"  # stands for $$.Execution.Name in URIs until the definition is built
HASH_LENGTH = 32  # MD5 in hex
NAME_MAX = 63
INFRASTRUCTURE_FAILURES = ("InternalServerError*", "CapacityError*")
THROTTLING = [
    "SageMaker.ThrottlingException",
    "SageMaker.ResourceLimitExceededException",
    "SageMaker.InternalFailureException",
    "S3.SlowDownException",
    "S3.InternalErrorException",
]


@dataclass
class StepPlan:
    """One step as the state machine runs it: templates holding ``EXECUTION``."""

    name: str
    job_prefix: str  # start of its jobs' names: <workflow>-<step>, shortened
    request: dict[str, Any]  # CreateProcessingJob
    job_file: dict[str, Any]  # job.json, without its parameters
    job_file_key: str  # where job.json goes (holds EXECUTION)
    static_parameters: dict[str, Any] = field(default_factory=dict)
    dynamic_parameters: list[str] = field(default_factory=list)  # taken from the execution's
    retries: int = 0


def slug(text: str, limit: int) -> str:
    """Letters, digits and single hyphens, at most ``limit`` characters: valid in every name."""
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")[:limit].rstrip("-") or "x"


def job_prefix(workflow: str, step: str) -> str:
    """``<workflow>-<step>`` short enough that ``<prefix>-<attempt>-<md5>`` fits 63 characters."""
    room = NAME_MAX - HASH_LENGTH - 4  # two hyphens and up to two digits of attempt
    step_part = slug(step, room // 2)
    return f"{slug(workflow, room - len(step_part) - 1)}-{step_part}"


def job_name(prefix: str, attempt: int, run_id: str) -> str:
    """The name the state machine gives a step's job (``run_id``: MD5 of the execution ARN)."""
    return f"{prefix}-{attempt}-{run_id}"


def definition(
    plans: list[list[StepPlan]],
    *,
    bucket: str,
    root_key: str,
    defaults: dict[str, Any],
    poll_seconds: int,
    comment: str,
) -> dict[str, Any]:
    """The state machine for steps grouped in dependency levels."""
    states: dict[str, Any] = {
        "Trigger": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.detail.object.key", "IsPresent": True, "Next": "FromS3"},
                {"Variable": "$.parameters", "IsPresent": True, "Next": "FromRequest"},
            ],
            "Default": "FromNothing",
        },
        "FromS3": _given(
            {"s3_uri.$": "States.Format('s3://{}/{}', $.detail.bucket.name, $.detail.object.key)"}, defaults
        ),
        "FromRequest": _given({"given.$": "$.parameters"}, defaults, nested=False),
        "FromNothing": _given({}, defaults),
        "Init": {
            "Type": "Pass",
            "Parameters": {
                "params.$": "States.JsonMerge($.defaults, $.given, false)",
                "execution.$": "$$.Execution.Name",
                "run.$": "States.Hash($$.Execution.Id, 'MD5')",
            },
            "Next": "Parameters",
        },
        "Parameters": {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:s3:putObject",
            "Parameters": {
                "Bucket": bucket,
                "Key.$": _format(f"{root_key}executions/{EXECUTION}/parameters.json"),
                "Body.$": "States.JsonToString($.params)",
                "ContentType": "application/json",
            },
            "ResultPath": None,
            "Retry": _retry(),
        },
    }
    previous = "Parameters"
    for index, level in enumerate(plans, start=1):
        name = f"Level {index}: " + ", ".join(p.name for p in level)
        states[previous]["Next"] = name
        states[name] = {
            "Type": "Parallel",
            "Branches": [_branch(plan, bucket, poll_seconds) for plan in level],
            "ResultPath": None,
        }
        previous = name
    states[previous]["Next"] = "Done"
    states["Done"] = {"Type": "Succeed"}
    return {"Comment": comment, "StartAt": "Trigger", "States": states}


def _given(given: dict[str, Any], defaults: dict[str, Any], nested: bool = True) -> dict[str, Any]:
    parameters = {"given": given} if nested else dict(given)
    return {"Type": "Pass", "Parameters": {**parameters, "defaults": defaults}, "Next": "Init"}


def _branch(plan: StepPlan, bucket: str, poll_seconds: int) -> dict[str, Any]:
    """A step's states: job file, create, wait, describe, decide; retried on infrastructure failures."""
    step = plan.name
    name = f"States.Format('{_escape(plan.job_prefix)}-{{}}-{{}}', $.job.attempt, $.run)"
    dynamic = plan.dynamic_parameters
    recorded = {k: v for k, v in plan.job_file["recorded_parameters"].items() if k not in dynamic}
    job_file = {
        **_templated(plan.job_file),
        "job_name.$": name,
        "parameters": {**plan.static_parameters, **{f"{k}.$": f"$.params.{k}" for k in dynamic}},
        "recorded_parameters": {
            **recorded,
            **{f"{k}.$": f"States.Format('{{}}', $.params.{k})" for k in dynamic},
        },
    }
    del job_file["job_name"]
    request = _templated(plan.request)
    del request["ProcessingJobName"]
    request["ProcessingJobName.$"] = "$.job.name"
    s = {
        k: f"{step}: {k}"
        for k in (
            "start",
            "prepare",
            "job file",
            "create",
            "wait",
            "poll",
            "ended",
            "why",
            "retry",
            "again",
            "failed",
            "done",
        )
    }
    states = {
        s["start"]: {
            "Type": "Pass",
            "Parameters": {"attempt": 0},
            "ResultPath": "$.job",
            "Next": s["prepare"],
        },
        s["prepare"]: {
            "Type": "Pass",
            "Parameters": {"attempt.$": "$.job.attempt", "name.$": name, "file": job_file},
            "ResultPath": "$.job",
            "Next": s["job file"],
        },
        s["job file"]: {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:s3:putObject",
            "Parameters": {
                "Bucket": bucket,
                "Key.$": _format(plan.job_file_key),
                "Body.$": "States.JsonToString($.job.file)",
                "ContentType": "application/json",
            },
            "ResultPath": None,
            "Retry": _retry(),
            "Next": s["create"],
        },
        s["create"]: {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:sagemaker:createProcessingJob",
            "Parameters": request,
            "ResultPath": None,
            "Retry": _retry(),
            "Next": s["wait"],
        },
        s["wait"]: {"Type": "Wait", "Seconds": poll_seconds, "Next": s["poll"]},
        s["poll"]: _describe_job({"status.$": "$.ProcessingJobStatus"}, s["ended"]),
        s["ended"]: {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.job.state.status", "StringEquals": "Completed", "Next": s["done"]},
                {"Variable": "$.job.state.status", "StringEquals": "Failed", "Next": s["why"]},
                {"Variable": "$.job.state.status", "StringEquals": "Stopped", "Next": s["failed"]},
            ],
            "Default": s["wait"],
        },
        s["why"]: _describe_job({"reason.$": "$.FailureReason"}, s["retry"] if plan.retries else s["failed"]),
        s["done"]: {"Type": "Succeed"},
        s["failed"]: {
            "Type": "Fail",
            "Error": "StepFailed",
            "Cause": f"step {step}: its processing job ended Failed or Stopped (see its log and notebook)",
        },
    }
    if plan.retries:
        states[s["retry"]] = {
            "Type": "Choice",
            "Choices": [
                {
                    "And": [
                        {"Variable": "$.job.attempt", "NumericLessThan": plan.retries},
                        {
                            "Or": [
                                {"Variable": "$.job.state.reason", "StringMatches": p}
                                for p in INFRASTRUCTURE_FAILURES
                            ]
                        },
                    ],
                    "Next": s["again"],
                }
            ],
            "Default": s["failed"],
        }
        states[s["again"]] = {
            "Type": "Pass",
            "Parameters": {"attempt.$": "States.MathAdd($.job.attempt, 1)"},
            "ResultPath": "$.job",
            "Next": s["prepare"],
        }
    return {"StartAt": s["start"], "States": states}


def _describe_job(selector: dict[str, str], next_state: str) -> dict[str, Any]:
    """A task that reads the step's job (DescribeProcessingJob) into ``$.job.state``, kept small."""
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::aws-sdk:sagemaker:describeProcessingJob",
        "Parameters": {"ProcessingJobName.$": "$.job.name"},
        "ResultSelector": selector,
        "ResultPath": "$.job.state",
        "Retry": _retry(),
        "Next": next_state,
    }


def _retry() -> list[dict[str, Any]]:
    """Throttling and AWS's own hiccups on a call: the same call again (never a job's failure)."""
    return [{"ErrorEquals": list(THROTTLING), "IntervalSeconds": 2, "MaxAttempts": 5, "BackoffRate": 2.0}]


def _templated(value: Any) -> Any:
    """``value`` with every string holding ``EXECUTION`` turned into a ``States.Format`` field."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, str) and EXECUTION in item:
                out[f"{key}.$"] = _format(item)
            else:
                out[key] = _templated(item)
        return out
    if isinstance(value, list):
        return [_templated(item) for item in value]
    return value


def _format(text: str) -> str:
    """``States.Format`` of ``text`` with ``EXECUTION`` as the execution's name."""
    parts = [_escape(part) for part in text.split(EXECUTION)]
    if len(parts) == 1:
        return f"States.Format('{parts[0]}')"
    return f"States.Format('{'{}'.join(parts)}'{', $.execution' * (len(parts) - 1)})"


def _escape(text: str) -> str:
    """A literal inside an intrinsic function's quoted string."""
    return re.sub(r"([\\'{}])", r"\\\1", text)
