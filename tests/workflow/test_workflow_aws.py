"""Workflows deployed to Step Functions, against the moto server with its interpreter switched on:
the state machine creates the processing jobs, the fake SageMaker runs their notebooks (worker in a
subprocess), outputs land in moto's S3 and MLflow holds the runs after `batcat workflow sync`."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import REGION, ROLE, report_eventbridge_notifications, s3_keys
from conftest import write_notebook

from batcat_nb.backends.sagemaker import aws
from batcat_nb.backends.sagemaker import stepfunctions as sfn

EXECUTION_ROLE = "arn:aws:iam::123456789012:role/batcat-tests-states"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ml-alerts"
MANAGED_MLFLOW = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/ml"

PREPARE = (
    "import pathlib\n"
    "rows = [n for n in range(5) if n >= min_units]\n"
    "(pathlib.Path(out_dir) / 'rows.txt').write_text(','.join(map(str, rows)) + '|' + s3_uri)"
)
REPORT = (
    "import pathlib, batcat_nb\n"
    "text = (pathlib.Path(data_dir) / 'rows.txt').read_text()\n"
    "rows = text.split('|')[0].split(',')\n"
    "if fail: raise ValueError('asked to fail')\n"
    "batcat_nb.record('rows', len(rows) * scale)\n"
    "(pathlib.Path(report_dir) / 'report.txt').write_text(label + ':' + text)"
)


@pytest.fixture
def interpreter(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's Step Functions interpreter runs the executions (off again afterwards); its tasks
    call localhost:$MOTO_PORT, which must be this server."""
    import requests

    monkeypatch.setenv("MOTO_PORT", moto_server.rsplit(":", 1)[1])

    requests.post(f"{moto_server}/moto-api/config", json={"stepfunctions": {"execute_state_machine": True}})
    yield
    requests.post(f"{moto_server}/moto-api/config", json={"stepfunctions": {"execute_state_machine": False}})


@pytest.fixture(autouse=True)
def eventbridge_notifications_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    report_eventbridge_notifications(monkeypatch.setattr)


@pytest.fixture
def aws_options(project: Path, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The SageMaker options from BATCAT_SAGEMAKER_*, the execution role from BATCAT_STEPFUNCTIONS_*."""
    for name, value in options.items():
        monkeypatch.setenv(f"BATCAT_SAGEMAKER_{name.upper()}", value)
    monkeypatch.setenv("BATCAT_STEPFUNCTIONS_EXECUTION_ROLE", EXECUTION_ROLE)
    monkeypatch.setenv("BATCAT_STEPFUNCTIONS_POLL_INTERVAL", "1")
    return options


@pytest.fixture
def pipeline(project: Path, bucket: str) -> Path:
    """prepare -> (left, right) in parallel, each reading prepare's output; on_s3, schedule, notify."""
    (project / "notebooks").mkdir()
    write_notebook(
        project / "notebooks" / "prepare.ipynb", "min_units = 0\nout_dir = ''\ns3_uri = 'none'", PREPARE
    )
    write_notebook(
        project / "notebooks" / "report.ipynb",
        "data_dir = ''\nreport_dir = ''\nlabel = 'x'\nscale = 1\nfail = False\nmin_units = 0",
        REPORT,
    )
    (project / "notebooks" / "helper.py").write_text("X = 1\n")
    path = project / "workflows" / "sales.yaml"
    path.parent.mkdir()
    path.write_text(
        f"""
name: sales
parameters: {{min_units: 1}}
schedule: "cron(0 3 * * ? *)"
on_s3: s3://{bucket}/landing/
notify: {TOPIC}
steps:
  prepare:
    notebook: ../notebooks/prepare.ipynb
    outputs: [out]
    include: [../notebooks/helper.py]
  left:
    notebook: ../notebooks/report.ipynb
    inputs: {{data: prepare.out}}
    outputs: [report]
    parameters: {{label: L, scale: 2}}
  right:
    notebook: ../notebooks/report.ipynb
    inputs: {{data: prepare.out}}
    outputs: {{report: s3://{bucket}/reports/right/}}
    parameters: {{label: R}}
    retries: 1
"""
    )
    return path


def batcat_workflow(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``batcat workflow ARGS`` through the real entry point (errors: one line, exit 2)."""
    import click

    from batcat_nb import cli
    from batcat_nb.cli.workflow_deploy import COMMANDS

    if "workflow" not in cli.cli.commands:  # the local half's group, once merged, holds them
        cli.cli.add_command(click.Group("workflow", commands=COMMANDS))
    capsys.readouterr()
    argv = sys.argv
    sys.argv = ["batcat", "workflow", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exit:
        code = int(exit.code or 0)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def sfn_client() -> Any:
    return aws.client("stepfunctions", REGION)


def state_machine_arn(name: str = "sales") -> str:
    return f"arn:aws:states:{REGION}:123456789012:stateMachine:batcat-{name}"


def finished(execution_arn: str, timeout: float = 240) -> dict[str, Any]:
    """The execution once it has ended (polled: moto's interpreter runs it in a thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sfn_client().describe_execution(executionArn=execution_arn)
        if found["status"] != "RUNNING":
            return dict(found)
        time.sleep(0.5)
    raise AssertionError(f"{execution_arn} still RUNNING after {timeout}s")


def read(bucket: str, key: str) -> str:
    return str(aws.client("s3", REGION).get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def deploy(capsys: pytest.CaptureFixture[str], pipeline: Path) -> str:
    code, out, err = batcat_workflow(capsys, "deploy", str(pipeline))
    assert code == 0, err
    return out


# ---------------------------------------------------------------------------------------------
# deploy, trigger, the notebooks run, outputs in S3, MLflow after sync


def test_deploy_trigger_runs_every_step_and_sync_fills_mlflow(
    capsys: pytest.CaptureFixture[str],
    pipeline: Path,
    aws_options: dict[str, Any],
    fake_sagemaker: Any,
    interpreter: None,
    bucket: str,
    runs_of: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    code, out, err = batcat_workflow(capsys, "deploy", str(pipeline))
    assert code == 0, err
    assert "created state machine batcat-sales" in out
    # the store is a sqlite file no job reaches: said once for the workflow, not once per step
    warnings = [m for m in caplog.messages if "cannot reach this tracking store" in m]
    assert len(warnings) == 1 and "batcat workflow sync NAME" in warnings[0], warnings
    code, out, err = batcat_workflow(capsys, "trigger", "sales", "-p", "min_units", "3", "--wait")
    assert code == 0, out + err
    execution = out.splitlines()[0].split()[1]
    assert out.rstrip().endswith(f"sales {execution}: SUCCEEDED")
    assert "[left] " in out and "[right] " in out  # followed step by step
    root = f"jobs/sales/executions/{execution}"
    assert json.loads(read(bucket, f"{root}/parameters.json")) == {"min_units": 3, "s3_uri": "none"}
    assert read(bucket, f"{root}/prepare/output/out/rows.txt") == "3,4|none"
    assert read(bucket, f"{root}/left/output/report/report.txt") == "L:3,4|none"
    assert read(bucket, "reports/right/report.txt") == "R:3,4|none"
    job_file = json.loads(read(bucket, f"{root}/left/input/batcat/job.json"))
    assert job_file["parameters"] == {"label": "L", "scale": 2, "min_units": 3}
    # every job got the request `batcat run --backend sagemaker` builds, its code by content hash
    requests = fake_sagemaker.requests
    assert len(requests) == 3
    for request in requests.values():
        aws.validate_request("sagemaker", "CreateProcessingJob", request)
        code_uri = next(
            i["S3Input"]["S3Uri"] for i in request["ProcessingInputs"] if i["InputName"] == "code"
        )
        assert code_uri.startswith(f"s3://{bucket}/jobs/sales/code/")
        assert request["RoleArn"] == ROLE
        tags = {t["Key"]: t["Value"] for t in request["Tags"]}
        assert tags["batcat.workflow"] == "sales" and tags["batcat.workflow.execution"] == execution
    assert "helper.py" in str(s3_keys(bucket, "jobs/sales/code/"))

    code, out, err = batcat_workflow(capsys, "status", "sales", execution)
    assert code == 0, err
    assert out.splitlines()[0] == f"{execution}  SUCCEEDED"
    assert all(f"{step} " in out and "Completed" in out for step in ("prepare", "left", "right"))

    code, out, err = batcat_workflow(capsys, "status", "sales")
    assert code == 0 and f"{execution} " in out and "SUCCEEDED" in out, out + err
    code, out, err = batcat_workflow(capsys, "sync", "sales")
    assert code == 0, err
    runs = {r.info.run_name: r for r in runs_of("sales")}
    assert {"prepare", "left", "right", execution} <= set(runs)
    left = runs["left"]
    assert left.info.status == "FINISHED"
    assert left.data.params["min_units"] == "3" and left.data.params["label"] == "L"
    assert left.data.metrics["rows"] == 4.0
    assert left.data.tags["mlflow.parentRunId"] == runs[execution].info.run_id
    assert runs[execution].info.status == "FINISHED"
    code, out, _ = batcat_workflow(capsys, "sync", "sales")
    assert "0 step run(s) completed" in out  # a second sync changes nothing
    assert len(runs_of("sales")) == 4


def test_failing_notebook_fails_the_execution(
    capsys: pytest.CaptureFixture[str],
    pipeline: Path,
    aws_options: dict[str, Any],
    fake_sagemaker: Any,
    interpreter: None,
    bucket: str,
) -> None:
    pipeline.write_text(pipeline.read_text().replace("{label: R}", "{label: R, fail: true}"))
    deploy(capsys, pipeline)
    code, out, err = batcat_workflow(capsys, "trigger", "sales", "--wait")
    assert code == 1
    execution = out.splitlines()[0].split()[1]
    assert out.rstrip().endswith(f"sales {execution}: FAILED")
    found = sfn_client().describe_execution(
        executionArn=f"{state_machine_arn().replace('stateMachine', 'execution')}:{execution}"
    )
    assert found["status"] == "FAILED"
    right = [r for n, r in fake_sagemaker.requests.items() if n.startswith("sales-right-")]
    assert len(right) == 1  # a notebook's own error is never retried
    notebook = s3_keys(bucket, f"jobs/sales/executions/{execution}/right/output/notebook/")
    assert any(k.endswith("report.ipynb") for k in notebook)  # the failing notebook is kept


def test_infrastructure_failure_is_retried_under_a_new_job_name(
    capsys: pytest.CaptureFixture[str],
    pipeline: Path,
    aws_options: dict[str, Any],
    fake_sagemaker: Any,
    interpreter: None,
) -> None:
    from aws_fixtures import subprocess_runner

    from batcat_nb.contract import ProcessingOutcome

    def flaky(request: dict[str, Any], **kwargs: Any) -> Any:
        name = request["ProcessingJobName"]
        if name.startswith("sales-right-0-"):
            return ProcessingOutcome(1, "Failed", "InternalServerError: the instance was lost")
        return subprocess_runner(request, **kwargs)

    fake_sagemaker.runner = flaky
    deploy(capsys, pipeline)
    code, out, err = batcat_workflow(capsys, "trigger", "sales", "--wait")
    assert code == 0, out + err
    names = sorted(n for n in fake_sagemaker.requests if n.startswith("sales-right-"))
    assert [n.split("-")[2] for n in names] == ["0", "1"]
    assert fake_sagemaker.outcomes[names[1]].status == "Completed"


# ---------------------------------------------------------------------------------------------
# what moto stores but never fires: the schedule and the rules, then their executions by hand


def test_schedule_and_rules_are_defined_and_their_inputs_start_executions(
    capsys: pytest.CaptureFixture[str],
    pipeline: Path,
    aws_options: dict[str, Any],
    fake_sagemaker: Any,
    interpreter: None,
    bucket: str,
) -> None:
    s3 = aws.client("s3", REGION)
    queue = "arn:aws:sqs:us-east-1:123456789012:other"
    aws.client("sqs", REGION).create_queue(QueueName="other")
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    deploy(capsys, pipeline)
    arn = state_machine_arn()
    scheduler = aws.client("scheduler", REGION)
    schedule = scheduler.get_schedule(Name="batcat-sales", GroupName="batcat-sales")
    assert schedule["ScheduleExpression"] == "cron(0 3 * * ? *)"
    assert schedule["Target"]["Arn"] == arn and schedule["Target"]["RoleArn"] == EXECUTION_ROLE
    group = scheduler.get_schedule_group(Name="batcat-sales")["Arn"]
    assert scheduler.list_tags_for_resource(ResourceArn=group)["Tags"] == [
        {"Key": "batcat.workflow", "Value": "sales"}
    ]
    events = aws.client("events", REGION)
    rule = events.describe_rule(Name="batcat-sales-on-s3")
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [bucket]}, "object": {"key": [{"prefix": "landing/"}]}},
    }
    assert events.list_targets_by_rule(Rule="batcat-sales-on-s3")["Targets"][0]["Arn"] == arn
    failed = events.describe_rule(Name="batcat-sales-failed")
    assert json.loads(failed["EventPattern"])["detail"] == {
        "status": ["FAILED", "TIMED_OUT", "ABORTED"],
        "stateMachineArn": [arn],
    }
    assert events.list_targets_by_rule(Rule="batcat-sales-failed")["Targets"] == [
        {"Id": "notify", "Arn": TOPIC}
    ]
    tags = events.list_tags_for_resource(ResourceARN=rule["Arn"])["Tags"]
    assert {"Key": "batcat.workflow", "Value": "sales"} in tags
    notification = s3.get_bucket_notification_configuration(Bucket=bucket)
    assert "EventBridgeConfiguration" in notification
    assert notification["QueueConfigurations"][0]["QueueArn"] == queue  # kept

    # What EventBridge delivers for an object created under landing/ (the event, as it is)
    event = {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-30T03:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {
                "key": "landing/day-1.csv",
                "size": 5,
                "etag": "b1946ac92492d2347c6235b4d2611184",
                "sequencer": "00617F08299329D189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }
    # both name their executions with a UUID, as EventBridge and Scheduler do
    start = sfn_client().start_execution
    from_s3 = start(stateMachineArn=arn, name=str(uuid.uuid4()), input=json.dumps(event))["executionArn"]
    from_schedule = start(stateMachineArn=arn, name=str(uuid.uuid4()), input=schedule["Target"]["Input"])[
        "executionArn"
    ]
    for started in (from_s3, from_schedule):
        assert finished(started)["status"] == "SUCCEEDED"
    s3_run = from_s3.rsplit(":", 1)[-1]
    assert read(bucket, f"jobs/sales/executions/{s3_run}/prepare/output/out/rows.txt") == (
        f"1,2,3,4|s3://{bucket}/landing/day-1.csv"
    )
    scheduled = from_schedule.rsplit(":", 1)[-1]
    assert read(bucket, f"jobs/sales/executions/{scheduled}/prepare/output/out/rows.txt") == "1,2,3,4|none"


# ---------------------------------------------------------------------------------------------
# idempotence, updates, delete


def count_writes(calls: list[str]) -> Any:
    """Every AWS call the deploy makes, as botocore sends it (an event hook on the session)."""

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    aws.reset()
    aws.session(REGION).events.register("before-call", record)
    return record


def test_redeploy_of_an_unchanged_file_writes_nothing_and_a_change_updates_in_place(
    capsys: pytest.CaptureFixture[str], pipeline: Path, aws_options: dict[str, Any], bucket: str
) -> None:
    deploy(capsys, pipeline)
    calls: list[str] = []
    count_writes(calls)
    out = deploy(capsys, pipeline)
    assert out.strip() == f"sales: unchanged ({state_machine_arn()})"
    writes = [c for c in calls if not c.startswith(("Describe", "Get", "List", "Head"))]
    assert calls and writes == []

    calls.clear()
    pipeline.write_text(pipeline.read_text().replace("cron(0 3 * * ? *)", "rate(1 hour)"))
    out = deploy(capsys, pipeline)
    assert "updated schedule batcat-sales: rate(1 hour)" in out
    assert "updated state machine" not in out
    writes = [c for c in calls if not c.startswith(("Describe", "Get", "List", "Head"))]
    assert writes == ["UpdateSchedule"]

    (pipeline.parent.parent / "notebooks" / "helper.py").write_text("X = 2\n")
    out = deploy(capsys, pipeline)
    assert "staged 2 file(s) under" in out and "updated state machine batcat-sales" in out


def test_delete_removes_everything_deploy_created(
    capsys: pytest.CaptureFixture[str], pipeline: Path, aws_options: dict[str, Any], bucket: str
) -> None:
    code, out, err = batcat_workflow(capsys, "deploy", str(pipeline), "--create-roles")
    assert code == 0, err
    assert "created role batcat-sales-job" in out and "created role batcat-sales-states" in out
    iam = aws.client("iam", REGION)
    policy = iam.get_role_policy(RoleName="batcat-sales-states", PolicyName="batcat")["PolicyDocument"]
    assert {
        "Effect": "Allow",
        "Action": "states:StartExecution",
        "Resource": "arn:aws:states:*:123456789012:stateMachine:batcat-sales",
    } in policy["Statement"]
    code, out, err = batcat_workflow(capsys, "deploy", str(pipeline), "--create-roles")
    assert code == 0 and out.strip().endswith(f"sales: unchanged ({state_machine_arn()})"), out + err
    aws.client("s3", REGION).put_object(Bucket=bucket, Key="jobs/sales/executions/x/keep.txt", Body=b"1")
    code, out, err = batcat_workflow(capsys, "list")
    assert f"sales{' ' * 35} {state_machine_arn()}" in out
    code, out, err = batcat_workflow(capsys, "delete", "sales")
    assert code == 0, err
    assert sfn_client().list_state_machines()["stateMachines"] == []
    events = aws.client("events", REGION)
    assert [r["Name"] for r in events.list_rules(NamePrefix="batcat-sales")["Rules"]] == []
    groups = aws.client("scheduler", REGION).list_schedule_groups(NamePrefix="batcat-sales")["ScheduleGroups"]
    assert groups == []
    assert [
        r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith("batcat-sales")
    ] == []
    assert s3_keys(bucket, "jobs/sales/") == ["jobs/sales/executions/x/keep.txt"]
    notification = aws.client("s3", REGION).get_bucket_notification_configuration(Bucket=bucket)
    assert "EventBridgeConfiguration" not in notification  # deploy switched it on, delete off
    code, _, err = batcat_workflow(capsys, "status", "sales")
    assert code == 2 and "workflow 'sales' is not deployed" in err


# ---------------------------------------------------------------------------------------------
# bad input: one line each, exit 2


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["deploy", "{file}"],
            {"BATCAT_STEPFUNCTIONS_EXECUTION_ROLE": ""},
            "no execution role for the state machine",
        ),
        (["deploy", "{file}"], {"BATCAT_SAGEMAKER_ROLE": ""}, "no IAM role for the job"),
        (
            ["deploy", "{file}", "--s3-prefix", "bucket/jobs"],
            {},
            "--s3-prefix 'bucket/jobs' is not an S3 URI",
        ),
        (["deploy", "{file}", "--execution-role", "states"], {}, "role 'states' is not an IAM role ARN"),
        (
            ["deploy", "{file}", "--s3-prefix", "s3://no-such-bucket-x/p"],
            {},
            "S3 bucket 'no-such-bucket-x' does not exist",
        ),
        (["deploy", "missing.yaml"], {}, "missing.yaml"),
        (["trigger", "nothing"], {}, "workflow 'nothing' is not deployed"),
        (["status", "nothing"], {}, "workflow 'nothing' is not deployed"),
        (["delete", "nothing"], {}, "workflow 'nothing' is not deployed"),
        (["sync", "nothing"], {}, "workflow 'nothing' is not deployed"),
    ],
)
def test_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str],
    pipeline: Path,
    aws_options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value) if value else monkeypatch.delenv(name)
    code, out, err = batcat_workflow(capsys, *[a.replace("{file}", str(pipeline)) for a in args])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert sfn_client().list_state_machines()["stateMachines"] == []


def test_trigger_refuses_unknown_parameters_and_executions(
    capsys: pytest.CaptureFixture[str], pipeline: Path, aws_options: dict[str, Any]
) -> None:
    deploy(capsys, pipeline)
    code, _, err = batcat_workflow(capsys, "trigger", "sales", "-p", "min_unit", "3")
    assert code == 2 and "workflow 'sales' has no parameter 'min_unit' (did you mean 'min_units'?)" in err
    code, _, err = batcat_workflow(capsys, "trigger", "sales", "-p", "min_units", "many")
    assert code == 2 and "parameter 'min_units' expects int (default 1), got 'many'" in err
    code, _, err = batcat_workflow(capsys, "status", "sales", "nope")
    assert code == 2 and "workflow 'sales' has no execution 'nope'" in err
    assert sfn_client().list_executions(stateMachineArn=state_machine_arn())["executions"] == []


def test_a_local_input_cannot_be_deployed(
    capsys: pytest.CaptureFixture[str], pipeline: Path, aws_options: dict[str, Any], project: Path
) -> None:
    (project / "data").mkdir()
    pipeline.write_text(
        pipeline.read_text().replace("outputs: [out]", "outputs: [out]\n    inputs: {raw: ../data}")
    )
    write_notebook(
        project / "notebooks" / "prepare.ipynb",
        "min_units = 0\nout_dir = ''\nraw_dir = ''\ns3_uri = ''",
        PREPARE,
    )
    code, _, err = batcat_workflow(capsys, "deploy", str(pipeline))
    assert code == 2 and "step prepare: input 'raw' is the local path" in err


def test_job_names_fit_sagemaker_for_the_longest_names() -> None:
    name = sfn.job_name(sfn.job_prefix("w" * 40, "s" * 60), 12, "0" * 32)
    assert len(name) <= 63
    aws.validate_request("sagemaker", "DescribeProcessingJob", {"ProcessingJobName": name})


def test_policy_prints_both_roles(
    capsys: pytest.CaptureFixture[str], pipeline: Path, aws_options: dict[str, Any]
) -> None:
    code, out, err = batcat_workflow(capsys, "policy", str(pipeline))
    assert code == 0, err
    assert "# batcat-sales-job (job role): permissions" in out
    assert '"states:StartExecution"' in out and "sns:Publish" in out


# ---------------------------------------------------------------------------------------------
# jobs that reach a tracking server record their own runs, grouped by execution


def test_jobs_record_their_own_runs_in_the_job_tracking_server_and_sync_adds_none(
    capsys: pytest.CaptureFixture[str],
    pipeline: Path,
    aws_options: dict[str, Any],
    fake_sagemaker: Any,
    interpreter: None,
    mlflow_server: str,
) -> None:
    from mlflow.tracking import MlflowClient

    write_notebook(  # the notebook logs to MLflow itself, into the run its job created
        pipeline.parent.parent / "notebooks" / "prepare.ipynb",
        "min_units = 0\nout_dir = ''\ns3_uri = 'none'",
        PREPARE,
        "import mlflow\nmlflow.log_metric('direct', 7)",
    )
    code, _, err = batcat_workflow(capsys, "deploy", str(pipeline), "--job-tracking-uri", mlflow_server)
    assert code == 0, err
    code, out, err = batcat_workflow(capsys, "trigger", "sales", "-p", "min_units", "3", "--wait")
    assert code == 0, out + err
    execution = out.splitlines()[0].split()[1]
    environment = next(r for n, r in fake_sagemaker.requests.items() if n.startswith("sales-left-"))[
        "Environment"
    ]
    assert environment["MLFLOW_TRACKING_URI"] == mlflow_server
    assert environment["BATCAT_WORKFLOW_EXECUTION"] == execution  # filled in by the state machine
    assert "MLFLOW_RUN_ID" not in environment

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("sales").experiment_id
    in_execution = f"tags.`batcat.workflow.execution` = '{execution}'"  # the server outlives tests
    runs = client.search_runs([experiment], in_execution)
    by_step = {r.data.tags["batcat.workflow.step"]: r for r in runs}
    assert sorted(by_step) == ["left", "prepare", "right"] and len(runs) == 3
    for step, run in by_step.items():
        assert run.info.status == "FINISHED" and run.info.run_name == step
        assert run.data.tags["batcat.workflow"] == "sales"
        assert run.data.params["min_units"] == "3"
    assert by_step["prepare"].data.metrics["direct"] == 7.0
    left = by_step["left"]
    assert left.data.params["label"] == "L" and left.data.metrics["rows"] == 4.0
    artifacts = [a.path for a in client.list_artifacts(left.info.run_id)]
    assert "report.ipynb" in artifacts

    code, out, err = batcat_workflow(capsys, "sync", "sales", "--tracking-uri", mlflow_server)
    assert code == 0, err
    assert "0 step run(s) completed" in out  # the jobs completed their runs themselves
    runs = {r.info.run_name: r for r in client.search_runs([experiment], in_execution)}
    assert len(runs) == 4 and runs[execution].info.status == "FINISHED"
    parent = runs[execution].info.run_id
    assert all(runs[s].data.tags["mlflow.parentRunId"] == parent for s in ("prepare", "left", "right"))


def test_sync_fails_the_run_of_an_attempt_whose_instance_was_lost(
    capsys: pytest.CaptureFixture[str],
    pipeline: Path,
    aws_options: dict[str, Any],
    fake_sagemaker: Any,
    interpreter: None,
    mlflow_server: str,
) -> None:
    from aws_fixtures import subprocess_runner
    from mlflow.tracking import MlflowClient

    from batcat_nb import job_run
    from batcat_nb.contract import ProcessingOutcome

    def lost(request: dict[str, Any], **kwargs: Any) -> Any:
        name = request["ProcessingJobName"]
        if name.startswith("sales-right-0-"):  # the worker created its run, then the instance went
            job = {"job_name": name, "kernel": "python3", "recorded_parameters": {}}
            assert job_run.start(job, request["Environment"]) is not None
            return ProcessingOutcome(1, "Failed", "InternalServerError: the instance was lost")
        return subprocess_runner(request, **kwargs)

    fake_sagemaker.runner = lost
    code, _, err = batcat_workflow(capsys, "deploy", str(pipeline), "--job-tracking-uri", mlflow_server)
    assert code == 0, err
    code, out, err = batcat_workflow(capsys, "trigger", "sales", "--wait")
    assert code == 0, out + err
    execution = out.splitlines()[0].split()[1]
    code, out, err = batcat_workflow(capsys, "sync", "sales", "--tracking-uri", mlflow_server)
    assert code == 0 and "0 step run(s) completed" in out, out + err
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("sales").experiment_id
    right = client.search_runs([experiment], f"tags.`batcat.workflow.step_run` = '{execution}/right'")
    status = {r.data.tags["batcat.job_name"].split("-")[2]: r.info.status for r in right}
    assert status == {"0": "FAILED", "1": "FINISHED"}


def test_a_job_whose_tracking_server_is_down_still_runs_and_sync_records_it(
    capsys: pytest.CaptureFixture[str],
    pipeline: Path,
    aws_options: dict[str, Any],
    fake_sagemaker: Any,
    interpreter: None,
    runs_of: Any,
) -> None:
    from conftest import free_port

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, _, err = batcat_workflow(capsys, "deploy", str(pipeline), "--job-tracking-uri", down)
    assert code == 0, err
    code, out, err = batcat_workflow(capsys, "trigger", "sales", "--wait")
    assert code == 0, out + err
    assert "could not create an MLflow run (batcat workflow sync will)" in out
    execution = out.splitlines()[0].split()[1]
    code, out, err = batcat_workflow(capsys, "sync", "sales")
    assert code == 0 and "3 step run(s) completed" in out, out + err
    ours = [r for r in runs_of("sales") if r.data.tags.get("batcat.workflow.execution") == execution]
    assert len(ours) == 4 and {r.info.status for r in ours} == {"FINISHED"}  # the parent and 3 steps


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "sqlite:///mlflow.db",
            "--job-tracking-uri 'sqlite:///mlflow.db' is not an MLflow server a job can reach",
        ),
        ("https://me:secret@mlflow.example.com", "--job-tracking-uri holds a credential"),
        ("https://mlflow.example.com/" + "x" * 240, "--job-tracking-uri is 267 characters long"),
    ],
)
def test_a_job_tracking_uri_jobs_cannot_use_is_refused(
    capsys: pytest.CaptureFixture[str], pipeline: Path, aws_options: dict[str, Any], uri: str, message: str
) -> None:
    before = sfn_client().list_state_machines()["stateMachines"]
    code, _, err = batcat_workflow(capsys, "deploy", str(pipeline), "--job-tracking-uri", uri)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "secret" not in err
    assert sfn_client().list_state_machines()["stateMachines"] == before  # refused before any write


@pytest.mark.parametrize(
    ("configured", "handed"),
    [
        ("https://mlflow.example.com", "https://mlflow.example.com"),
        (MANAGED_MLFLOW, MANAGED_MLFLOW),
        ("sqlite:///mlflow.db", None),
        ("http://127.0.0.1:5000", None),  # this machine's loopback is not the job's
        ("https://me:secret@mlflow.example.com", None),
    ],
)
def test_without_the_option_jobs_get_the_configured_store_only_when_they_can_reach_it(
    project: Path, monkeypatch: pytest.MonkeyPatch, configured: str, handed: str | None
) -> None:
    from batcat_nb.backends.sagemaker.workflow_plan import job_tracking_uri

    monkeypatch.setenv("BATCAT_TRACKING_URI", configured)
    assert job_tracking_uri(None) == handed
