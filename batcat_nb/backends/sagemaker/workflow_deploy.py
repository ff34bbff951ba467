"""Deploy a workflow to AWS, idempotently, and take it down again.

Each resource is read first and written only when it differs from the plan, so deploying an
unchanged file makes read calls only and says "unchanged". Unlike Metaflow's
``step_functions_client.push`` (create, else update), nothing is rewritten that is already
right. Every call goes through ``AwsCalls``, which checks it against botocore's service model
first and counts the writes.

Resources, all named after the workflow (``workflow_plan.Names``) and tagged ``batcat.workflow``:
the state machine; a schedule group holding the schedule (schedules carry no tags); a rule for
``on_s3`` (S3 "Object Created" events, with the bucket's EventBridge notifications switched on
and its other notification settings kept); a rule publishing failed executions to ``notify``;
the staged code and ``deployment.json`` under the workflow's S3 prefix; with ``--create-roles``,
the two IAM roles (``workflow_iam``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ...errors import UsageError
from ...storage import split_s3
from . import aws
from .workflow_plan import DEPLOYMENT_FILE, TAG_WORKFLOW, Names, Plan

log = logging.getLogger("batcat_nb")

NOT_FOUND = frozenset(
    {
        "ResourceNotFoundException",
        "StateMachineDoesNotExist",
        "ExecutionDoesNotExist",
        "InvalidArn",
        "NoSuchKey",
        "404",
        "NoSuchEntity",
        "NotFound",
    }
)
FAILED_STATUSES = ["FAILED", "TIMED_OUT", "ABORTED"]
SWITCHED_ON = "eventbridge_switched_on"  # the bucket whose EventBridge notifications deploy switched on
READ_PREFIXES = ("Describe", "Get", "List", "Head")


class AwsCalls:
    """boto3 calls checked against botocore's model first; writes counted (``writes``)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.writes: list[str] = []

    def __call__(self, service: str, method: str, **params: Any) -> Any:
        client = aws.client(service, self.region)
        operation = client.meta.method_to_api_mapping[method]
        aws.validate_request(client.meta.service_model.service_name, operation, params)
        if not operation.startswith(READ_PREFIXES):
            self.writes.append(f"{service}:{operation}")
        try:
            return aws.retry_call(getattr(client, method), **params)
        except Exception as exc:
            if aws.error_code(exc) in NOT_FOUND:
                raise NotFound(aws.reason(exc)) from exc
            raise aws.translate(exc, f"{operation} ({service})") from None

    def find(self, service: str, method: str, **params: Any) -> Any:
        """The answer, or None when the resource does not exist."""
        try:
            return self(service, method, **params)
        except NotFound:
            return None


class NotFound(Exception):
    """The resource asked about does not exist."""


def deploy(plan: Plan, echo: Callable[[str], None]) -> list[str]:
    """Make AWS match ``plan``; return what changed (empty: everything was already so)."""
    calls = AwsCalls(plan.region)
    changes: list[str] = []
    _stage_code(plan, calls, changes)
    arn = _state_machine(plan, calls, changes)
    _schedule(plan, arn, calls, changes)
    switched_on = _s3_rule(plan, arn, calls, changes)
    _failure_rule(plan, arn, calls, changes)
    _record(plan, arn, switched_on, calls, changes)
    for change in changes:
        echo(f"  {change}")
    echo(f"{plan.workflow.name}: {'updated' if changes else 'unchanged'} ({arn})")
    return changes


def tags(name: str) -> dict[str, str]:
    return {TAG_WORKFLOW: name}


def _stage_code(plan: Plan, calls: AwsCalls, changes: list[str]) -> None:
    """Notebooks and includes under their content hash: an existing folder is complete."""
    for uri, files in plan.code.items():
        bucket, key = split_s3(uri)
        listed = calls("s3", "list_objects_v2", Bucket=bucket, Prefix=key)
        present = {item["Key"] for item in listed.get("Contents", [])}
        missing = [(path, key + name) for path, name in files if key + name not in present]
        for path, object_key in missing:
            calls("s3", "put_object", Bucket=bucket, Key=object_key, Body=path.read_bytes())
        if missing:
            changes.append(f"staged {len(missing)} file(s) under {uri}")


def find_state_machine(name: str, calls: AwsCalls) -> str | None:
    """The ARN of the state machine called ``name``, or None."""
    token: dict[str, str] = {}
    while True:
        page = calls("stepfunctions", "list_state_machines", **token)
        for machine in page.get("stateMachines", []):
            if machine["name"] == name:
                return str(machine["stateMachineArn"])
        if not page.get("nextToken"):
            return None
        token = {"nextToken": page["nextToken"]}


def _state_machine(plan: Plan, calls: AwsCalls, changes: list[str]) -> str:
    name = plan.names.state_machine
    definition = plan.definition()
    arn = find_state_machine(name, calls)
    if arn is None:
        created = calls(
            "stepfunctions",
            "create_state_machine",
            name=name,
            definition=json.dumps(definition),
            roleArn=plan.execution_role,
            type="STANDARD",
            tags=[{"key": k, "value": v} for k, v in tags(plan.workflow.name).items()],
        )
        changes.append(f"created state machine {name}")
        return str(created["stateMachineArn"])
    found = calls("stepfunctions", "describe_state_machine", stateMachineArn=arn)
    if json.loads(found["definition"]) != definition or found["roleArn"] != plan.execution_role:
        calls(
            "stepfunctions",
            "update_state_machine",
            stateMachineArn=arn,
            definition=json.dumps(definition),
            roleArn=plan.execution_role,
        )
        changes.append(f"updated state machine {name}")
    present = calls("stepfunctions", "list_tags_for_resource", resourceArn=arn).get("tags", [])
    wanted = [{"key": k, "value": v} for k, v in tags(plan.workflow.name).items()]
    if any(tag not in present for tag in wanted):
        calls("stepfunctions", "tag_resource", resourceArn=arn, tags=wanted)
        changes.append(f"tagged state machine {name}")
    return arn


def schedule_input() -> str:
    """What the schedule hands StartExecution: no parameters, the workflow's defaults apply."""
    return json.dumps({"parameters": {}, "trigger": "schedule"})


def _schedule(plan: Plan, arn: str, calls: AwsCalls, changes: list[str]) -> None:
    group = name = plan.names.schedule
    expression = plan.workflow.schedule
    found_group = calls.find("scheduler", "get_schedule_group", Name=group)
    if expression is None:
        if found_group is not None:
            calls("scheduler", "delete_schedule_group", Name=group)
            changes.append(f"deleted schedule group {group} (no schedule in the file)")
        return
    if found_group is None:
        calls(
            "scheduler",
            "create_schedule_group",
            Name=group,
            Tags=[{"Key": k, "Value": v} for k, v in tags(plan.workflow.name).items()],
        )
        changes.append(f"created schedule group {group}")
    wanted = {
        "ScheduleExpression": expression,
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": {"Arn": arn, "RoleArn": plan.execution_role, "Input": schedule_input()},
        "State": "ENABLED",
        "Description": f"batcat workflow {plan.workflow.name}",
    }
    found = calls.find("scheduler", "get_schedule", Name=name, GroupName=group)
    if found is None:
        calls("scheduler", "create_schedule", Name=name, GroupName=group, **wanted)
        changes.append(f"created schedule {name}: {expression}")
    elif not _contains(found, wanted):
        calls("scheduler", "update_schedule", Name=name, GroupName=group, **wanted)
        changes.append(f"updated schedule {name}: {expression}")


def s3_event_pattern(on_s3: str) -> dict[str, Any]:
    """S3 "Object Created" events for objects under the ``on_s3`` prefix."""
    bucket, prefix = split_s3(on_s3)
    detail: dict[str, Any] = {"bucket": {"name": [bucket]}}
    if prefix:
        detail["object"] = {"key": [{"prefix": prefix}]}
    return {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": detail}


def failure_pattern(state_machine_arn: str) -> dict[str, Any]:
    return {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"status": FAILED_STATUSES, "stateMachineArn": [state_machine_arn]},
    }


def _s3_rule(plan: Plan, arn: str, calls: AwsCalls, changes: list[str]) -> bool:
    """The rule for ``on_s3``; True when the bucket's EventBridge notifications were off."""
    on_s3 = plan.workflow.on_s3
    target = {"Id": "state-machine", "Arn": arn, "RoleArn": plan.execution_role}
    _rule(plan, plan.names.s3_rule, s3_event_pattern(on_s3) if on_s3 else None, target, calls, changes)
    return bool(on_s3) and _bucket_events(split_s3(str(on_s3))[0], calls, changes, on=True)


def _failure_rule(plan: Plan, arn: str, calls: AwsCalls, changes: list[str]) -> None:
    topic = plan.workflow.notify
    target = {"Id": "notify", "Arn": topic or ""}
    _rule(plan, plan.names.failure_rule, failure_pattern(arn) if topic else None, target, calls, changes)


def _rule(
    plan: Plan,
    name: str,
    pattern: dict[str, Any] | None,
    target: dict[str, str],
    calls: AwsCalls,
    changes: list[str],
) -> None:
    """An EventBridge rule with one target; ``pattern`` None: the rule must not exist."""
    found = calls.find("events", "describe_rule", Name=name)
    if pattern is None:
        if found is not None:
            delete_rule(name, calls)
            changes.append(f"deleted rule {name} (no longer in the file)")
        return
    if (
        found is None
        or json.loads(found.get("EventPattern") or "{}") != pattern
        or found.get("State") != "ENABLED"
    ):
        calls(
            "events",
            "put_rule",
            Name=name,
            EventPattern=json.dumps(pattern),
            State="ENABLED",
            Description=f"batcat workflow {plan.workflow.name}",
            **(
                {}
                if found
                else {"Tags": [{"Key": k, "Value": v} for k, v in tags(plan.workflow.name).items()]}
            ),
        )
        changes.append(f"{'updated' if found else 'created'} rule {name}")
    targets = calls("events", "list_targets_by_rule", Rule=name).get("Targets", [])
    if len(targets) != 1 or not _contains(targets[0], target):
        stale = [t["Id"] for t in targets if t["Id"] != target["Id"]]
        if stale:
            calls("events", "remove_targets", Rule=name, Ids=stale)
        calls("events", "put_targets", Rule=name, Targets=[target])
        changes.append(f"set the target of rule {name} to {target['Arn']}")


def _bucket_events(bucket: str, calls: AwsCalls, changes: list[str], on: bool) -> bool:
    """Switch the bucket's EventBridge notifications on (off), keeping every other notification;
    False when they already were."""
    found = calls("s3", "get_bucket_notification_configuration", Bucket=bucket)
    if ("EventBridgeConfiguration" in found) == on:
        return False
    kept = {
        k: v
        for k, v in found.items()
        if k in ("TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations")
    }
    calls(
        "s3",
        "put_bucket_notification_configuration",
        Bucket=bucket,
        NotificationConfiguration={**kept, **({"EventBridgeConfiguration": {}} if on else {})},
    )
    changes.append(f"switched {'on' if on else 'off'} EventBridge notifications of bucket {bucket}")
    return True


def _record(plan: Plan, arn: str, switched_on: bool, calls: AwsCalls, changes: list[str]) -> None:
    """``deployment.json``, remembering whether deploy switched the bucket's notifications on."""
    record = plan.record(arn)
    found = read_record(plan.root, calls) or {}
    bucket = split_s3(plan.workflow.on_s3)[0] if plan.workflow.on_s3 else None
    if switched_on or (bucket and found.get(SWITCHED_ON) == bucket):
        record[SWITCHED_ON] = bucket
    if found == record:
        return
    bucket, key = split_s3(plan.root)
    body = json.dumps(record, indent=2).encode()
    calls(
        "s3",
        "put_object",
        Bucket=bucket,
        Key=key + DEPLOYMENT_FILE,
        Body=body,
        ContentType="application/json",
    )
    changes.append(f"wrote {plan.root}{DEPLOYMENT_FILE}")


def read_record(root: str, calls: AwsCalls) -> dict[str, Any] | None:
    bucket, key = split_s3(root)
    found = calls.find("s3", "get_object", Bucket=bucket, Key=key + DEPLOYMENT_FILE)
    return None if found is None else dict(json.loads(found["Body"].read()))


def deployment(name: str, region: str) -> tuple[dict[str, Any], AwsCalls]:
    """The deployed workflow's record (``deployment.json``), found through its state machine's tags."""
    calls = AwsCalls(region)
    arn = find_state_machine(Names(name).state_machine, calls)
    if arn is None:
        raise UsageError(
            f"workflow {name!r} is not deployed in {region}; deploy it with `batcat workflow deploy FILE` "
            "(`batcat workflow list` shows the deployed ones)"
        )
    found = calls("stepfunctions", "describe_state_machine", stateMachineArn=arn)
    definition = json.loads(found["definition"])
    parameters = definition["States"]["Parameters"]["Parameters"]
    root = f"s3://{parameters['Bucket']}/" + _root_key(parameters["Key.$"])
    record = read_record(root, calls)
    if record is None:
        raise UsageError(f"workflow {name!r}: {root}{DEPLOYMENT_FILE} is missing; deploy the workflow again")
    return record, calls


def _root_key(expression: str) -> str:
    """The workflow's S3 key prefix, from the Key of its parameters file in the definition."""
    literal = expression.removeprefix("States.Format('").split("executions/", 1)[0]
    return literal.replace("\\", "")


def delete(name: str, region: str, echo: Callable[[str], None]) -> list[str]:
    """Remove what deploy created: state machine, schedule group, rules, code, record, roles."""
    from . import workflow_iam

    record, calls = deployment(name, region)
    names = Names(name)
    removed: list[str] = []
    if calls.find("scheduler", "get_schedule_group", Name=names.schedule) is not None:
        calls("scheduler", "delete_schedule_group", Name=names.schedule)
        removed.append(f"schedule group {names.schedule}")
    for rule in (names.s3_rule, names.failure_rule):
        if calls.find("events", "describe_rule", Name=rule) is not None:
            delete_rule(rule, calls)
            removed.append(f"rule {rule}")
    bucket = record.get(SWITCHED_ON)
    if bucket and not _watched(bucket, calls):
        _bucket_events(bucket, calls, removed, on=False)
    calls("stepfunctions", "delete_state_machine", stateMachineArn=record["state_machine"])
    removed.append(f"state machine {names.state_machine}")
    bucket, key = split_s3(record["root"])
    staged = _keys(bucket, key + "code/", calls) + [key + DEPLOYMENT_FILE]
    for start in range(0, len(staged), 1000):
        objects = [{"Key": k} for k in staged[start : start + 1000]]
        calls("s3", "delete_objects", Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    removed.append(f"{len(staged)} staged object(s) under {record['root']} (execution outputs kept)")
    removed += workflow_iam.delete_roles(name, calls)
    for line in removed:
        echo(f"  {line if line.startswith('switched') else 'deleted ' + line}")
    echo(f"{name}: deleted")
    return removed


def _watched(bucket: str, calls: AwsCalls) -> bool:
    """Whether another workflow's ``on_s3`` rule still listens to ``bucket``."""
    for rule in calls("events", "list_rules", NamePrefix="batcat-").get("Rules", []):
        pattern = json.loads(rule.get("EventPattern") or "{}")
        if rule["Name"].endswith("-on-s3") and bucket in pattern.get("detail", {}).get("bucket", {}).get(
            "name", []
        ):
            return True
    return False


def delete_rule(name: str, calls: AwsCalls) -> None:
    ids = [t["Id"] for t in calls("events", "list_targets_by_rule", Rule=name).get("Targets", [])]
    if ids:
        calls("events", "remove_targets", Rule=name, Ids=ids)
    calls("events", "delete_rule", Name=name)


def _keys(bucket: str, prefix: str, calls: AwsCalls) -> list[str]:
    keys: list[str] = []
    token: dict[str, str] = {}
    while True:
        page = calls("s3", "list_objects_v2", Bucket=bucket, Prefix=prefix, **token)
        keys += [item["Key"] for item in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        token = {"ContinuationToken": page["NextContinuationToken"]}


def _contains(found: Any, wanted: Any) -> bool:
    """Every value of ``wanted`` is in ``found`` (AWS adds defaults of its own)."""
    if isinstance(wanted, dict):
        return isinstance(found, dict) and all(_contains(found.get(k), v) for k, v in wanted.items())
    return bool(found == wanted)
