"""The SageMaker backend against a moto server that runs its jobs. End-to-end tests run them in the
runner image built from the current source, through the strict emulation (``in_runner_image``);
tests of the launcher's logic (stops of a job that stays InProgress, polling, refusals) need no
job to run or use the subprocess runner, and say so."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import REGION, ROLE, RUNNER_URI, s3_keys
from click.testing import CliRunner
from conftest import write_notebook

from batcat_nb import api
from batcat_nb.backends.sagemaker import aws
from batcat_nb.backends.sagemaker import backend as sm
from batcat_nb.backends.sagemaker import jobs as sagemaker_jobs
from batcat_nb.backends.sagemaker import registry as image_registry
from batcat_nb.errors import UsageError
from batcat_nb.spec import RunRequest
from batcat_nb.tracking import TAG_IMAGE

TRAIN = (
    "import batcat_nb, helper, pathlib\n"
    "rows = sorted(p.name for p in pathlib.Path(data_dir).iterdir())\n"
    "print('rows', rows)\n"
    "batcat_nb.record('score', alpha * 2)\n"
    "(pathlib.Path(report_dir) / 'report.txt').write_text(helper.greet(str(rows)))"
)


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCAT_SAGEMAKER_POLL_INTERVAL", "0.3")


@pytest.fixture
def train(project: Path) -> Path:
    """A notebook that reads an input, uses a helper module shipped with --include, writes an output."""
    (project / "helper.py").write_text("def greet(text):\n    return 'hello ' + text\n")
    (project / "data").mkdir()
    (project / "data" / "a.csv").write_text("x\n1\n")
    return write_notebook(project / "train.ipynb", "alpha = 0.5\ndata_dir = ''\nreport_dir = ''", TRAIN)


def request_for(notebook: Path, options: dict[str, Any], experiment: str, **fields: Any) -> RunRequest:
    return RunRequest(
        notebook=str(notebook),
        backend="sagemaker",
        experiment=experiment,
        backend_options=dict(options),
        **fields,
    )


# ---------------------------------------------------------------------------------------------
# submit -> the notebook runs -> outputs in S3 -> status -> the MLflow run complete


@pytest.mark.docker
def test_notebook_runs_as_a_processing_job_and_completes_its_mlflow_run(
    train, options, bucket, experiment, in_runner_image, mlflow_client, runs_of
):
    options = {**options, "include": ["helper.py"], "env": {"GREETING": "hi"}}
    request = request_for(
        train,
        options,
        experiment,
        parameters={"alpha": 2.0},
        inputs={"data": "data"},
        outputs={"report": "report"},
        tags={"team": "ml"},
    )
    result = api.run(request)

    assert result.status == "FINISHED", result.reason
    assert result.metrics == {"score": 4.0}
    assert Path(result.output_notebook).exists() and Path(result.html).exists()
    assert (Path("report") / "report.txt").read_text() == "hello ['a.csv']"  # output fetched back
    job = result.job_name
    keys = s3_keys(bucket, f"jobs/{job}/")
    for key in (
        "input/code/train.ipynb",
        "input/code/helper.py",
        "input/batcat/job.json",
        "input/data/a.csv",
    ):
        assert f"jobs/{job}/{key}" in keys
    for name in ("train.ipynb", "train.html", "batcat-manifest.json"):
        assert f"jobs/{job}/output/notebook/{name}" in keys
    assert f"jobs/{job}/output/report/report.txt" in keys

    sent = in_runner_image.requests[job]
    assert sent["Environment"] == {"GREETING": "hi"}  # sqlite store: the run is reconciled instead
    job_json = json.loads(_s3_text(bucket, f"jobs/{job}/input/batcat/job.json"))
    assert job_json["parameters"] == {"alpha": 2.0}  # parameters travel as a file, not as env
    assert {t["Key"]: t["Value"] for t in sent["Tags"]}["team"] == "ml"
    assert sagemaker_jobs.describe_job(job)["ProcessingJobStatus"] == "Completed"

    (run,) = runs_of(experiment)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"score": 4.0}
    assert run.data.params["alpha"] == "2.0"
    tags = run.data.tags
    assert tags[sm.TAG_JOB_ARN].endswith(f":processing-job/{job}")
    assert tags[sm.TAG_REGION] == REGION
    assert tags[TAG_IMAGE] == RUNNER_URI
    import boto3

    [ecr_image] = boto3.client("ecr").describe_images(repositoryName="batcat-runner")["imageDetails"]
    assert tags["batcat.image.digest"] == ecr_image["imageDigest"]  # ECR's answer, for reruns
    assert f"#/processing-jobs/{job}" in tags[sm.TAG_CONSOLE]
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"train.ipynb", "train.html", "batcat-manifest.json", "batcat-job.log"} <= artifacts
    assert "sagemaker" not in sys.modules  # the submission path is boto3 alone


@pytest.mark.docker
def test_job_log_streams_from_cloudwatch(train, options, experiment, in_runner_image):
    lines: list[str] = []
    options = {**options, "include": ["helper.py"]}
    # report_dir must be an output: the code channel, the notebook's cwd, is the platform's (read-only)
    request = request_for(
        train, options, experiment, log_output=True, inputs={"data": "data"}, outputs={"report": "r"}
    )
    handle = api.submit(request)
    handle._echo = lines.append
    result = handle.wait()
    assert result.status == "FINISHED", result.reason
    assert any("rows ['a.csv']" in line for line in lines)  # a cell's output, through CloudWatch
    assert "rows ['a.csv']" in handle.logs()
    log_file = Path(result.output_notebook).parent / "batcat-job.log"
    assert "rows ['a.csv']" in log_file.read_text()


@pytest.mark.docker
def test_failed_job_shows_the_reason_and_keeps_the_executed_notebook(
    project, options, experiment, in_runner_image, runs_of
):
    notebook = write_notebook(project / "broken.ipynb", "x = 1", "raise ValueError('no data for x')")
    result = api.run(request_for(notebook, options, experiment))

    assert result.status == "FAILED"
    assert "ValueError: no data for x" in result.reason
    assert Path(result.output_notebook).exists()  # the failing cell's traceback is in it
    description = sagemaker_jobs.describe_job(result.job_name)
    assert description["ProcessingJobStatus"] == "Failed"
    assert description["FailureReason"]
    assert "no data for x" in description["ExitMessage"]
    (run,) = runs_of(experiment)
    assert run.info.status == "FAILED"
    assert "no data for x" in run.data.tags[sm.TAG_EXIT_MESSAGE]
    assert run.data.tags[sm.TAG_FAILURE_REASON] == description["FailureReason"]


def test_stop_requested_by_the_user_ends_the_run_killed(
    project, options, experiment, fake_sagemaker, runs_of
):
    # logic: the job stays InProgress until stopped (a stop in the image: test_sagemaker_docker.py)
    fake_sagemaker.runner = None
    notebook = write_notebook(project / "slow.ipynb", "x = 1", "import time; time.sleep(600)")
    handle = api.submit(request_for(notebook, options, experiment))
    assert handle.status() == "RUNNING"
    handle.cancel("stopped by the test")
    result = handle.wait(timeout=30)

    assert result.status == "KILLED"
    assert result.reason == "stopped by the test"
    assert sagemaker_jobs.describe_job(handle.job_name)["ProcessingJobStatus"] == "Stopped"
    (run,) = runs_of(experiment)
    assert run.info.status == "KILLED"


def test_stop_from_another_terminal_also_ends_killed(project, options, experiment, fake_sagemaker, runs_of):
    fake_sagemaker.runner = None
    notebook = write_notebook(project / "slow.ipynb", "x = 1", "import time; time.sleep(600)")
    handle = api.submit(request_for(notebook, options, experiment))
    done = CliRunner().invoke(_cli(), ["stop", handle.job_name])
    assert done.exit_code == 0 and f"stopping {handle.job_name}" in done.output
    result = handle.wait(timeout=30)
    assert result.status == "KILLED"
    assert runs_of(experiment)[0].info.status == "KILLED"
    again = CliRunner().invoke(_cli(), ["stop", handle.job_name])
    assert "had already ended" in again.output


def test_a_tracking_server_reaches_the_job_through_the_request_it_is_created_with(
    project, options, experiment, fake_sagemaker, mlflow_server, monkeypatch
):
    """The job logs to the run itself: its CreateProcessingJob request names the server and the run.

    A job on AWS can never reach this machine's loopback, and this machine may reach nothing else:
    the server on 127.0.0.1 stands in for one the job could route to (the one topology seam).
    """
    monkeypatch.setattr(sm, "on_loopback", lambda uri: False)
    fake_sagemaker.runner = None  # the job stays InProgress: only its request matters here
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    handle = api.submit(request_for(notebook, options, experiment, tracking_uri=mlflow_server))
    try:
        sent = fake_sagemaker.requests[handle.job_name]["Environment"]
        assert sent == {
            "MLFLOW_TRACKING_URI": mlflow_server,
            "MLFLOW_RUN_ID": handle.spec.run_id,
            "MLFLOW_EXPERIMENT_ID": handle.spec.experiment_id,
        }
    finally:
        handle.cancel("the test is done")
        handle.wait(timeout=30)


def test_only_a_server_or_a_managed_mlflow_counts_as_reachable_from_the_job():
    assert sm._tracking_reachable("https://mlflow.example.internal")
    assert sm._tracking_reachable("arn:aws:sagemaker:us-east-1:1:mlflow-tracking-server/t")
    assert not sm._tracking_reachable("sqlite:///mlflow.db")
    assert not sm._tracking_reachable("/home/me/mlruns")


def test_a_request_botocore_refuses_fails_before_anything_is_staged_or_created(
    project, options, bucket, experiment, fake_sagemaker, runs_of
):
    """moto would accept this instance type: only batcat's own botocore check refuses it."""
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    request = request_for(notebook, {**options, "instance_type": "ml.m5.larg"}, experiment)
    with pytest.raises(UsageError, match="request refused before sending.*did you mean 'ml.m5.large'"):
        api.submit(request)
    assert fake_sagemaker.requests == {}
    assert s3_keys(bucket) == []
    assert runs_of(experiment) == []


@pytest.mark.parametrize(("timeout", "expected"), [(None, 24 * 3600), (120, 120 + 600)])
def test_max_runtime_defaults_to_a_day_or_the_timeout_plus_ten_minutes(project, options, timeout, expected):
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    spec = api.resolve_spec(request_for(notebook, options, "e", timeout=timeout))
    sent = sm._request(spec, sm.SageMakerBackend()._resolve(spec), {})
    assert sent["StoppingCondition"] == {"MaxRuntimeInSeconds": expected}


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:5000", "http://localhost:5000", "https://[::1]/", "sqlite:///x.db"]
)
def test_a_store_the_cloud_job_cannot_reach_is_never_handed_to_it(project, options, bucket, uri, caplog):
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    spec = api.resolve_spec(request_for(notebook, {**options, "check_image": False}, "e", tracking_uri=uri))
    backend = sm.SageMakerBackend()
    with caplog.at_level("WARNING", logger="batcat_nb"):
        backend.validate(spec)
    resolved = backend._resolved[spec.job_name]
    assert not sm._tracking_reachable(uri)
    assert not any(key.startswith("MLFLOW_") for key in sm._request(spec, resolved, {})["Environment"])
    assert "will be completed from the job's manifest" in caplog.text


def test_a_notebook_name_sagemaker_refuses_as_a_tag_is_tagged_in_a_form_it_accepts(project, options, bucket):
    notebook = write_notebook(project / "Sales Report (v2).ipynb", "x = 1")
    spec = api.resolve_spec(request_for(notebook, {**options, "check_image": False}, "e"))
    resolved = sm.SageMakerBackend()._resolve(spec)  # refused before: tag value pattern
    tags = {t["Key"]: t["Value"] for t in sm._request(spec, resolved, {})["Tags"]}
    assert tags["batcat:notebook"] == "Sales Report _v2_.ipynb"


def test_vpc_kms_and_resources_reach_the_request(project, options, bucket):
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    options = {
        **options,
        "subnets": ["subnet-0abc"],
        "security_groups": ["sg-0abc"],
        "kms_key": "arn:aws:kms:us-east-1:123456789012:key/abcd",
        "instance_count": 2,
        "volume_size": 50,
        "max_runtime": 3600,
    }
    spec = api.resolve_spec(request_for(notebook, options, "e"))
    sent = sm._request(spec, sm.SageMakerBackend()._resolve(spec), {})
    assert sent["NetworkConfig"]["VpcConfig"] == {"Subnets": ["subnet-0abc"], "SecurityGroupIds": ["sg-0abc"]}
    assert sent["ProcessingOutputConfig"]["KmsKeyId"].endswith("key/abcd")
    cluster = sent["ProcessingResources"]["ClusterConfig"]
    assert cluster == {
        "InstanceCount": 2,
        "InstanceType": "ml.t3.medium",
        "VolumeSizeInGB": 50,
        "VolumeKmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/abcd",
    }
    assert sent["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    names = [i["InputName"] for i in sent["ProcessingInputs"]]
    assert names == ["code", "batcat"]
    assert (
        sent["ProcessingInputs"][0]["S3Input"]["S3Uri"] == f"s3://{bucket}/jobs/{spec.job_name}/input/code/"
    )


def test_configuration_comes_from_pyproject_and_environment(project, bucket, ecr_image, monkeypatch):
    (project / "pyproject.toml").write_text(
        f'[tool.batcat.sagemaker]\nrole = "{ROLE}"\ns3_prefix = "s3://{bucket}/p"\n'
        'instance_type = "ml.t3.large"\n'
    )
    (project / ".git").mkdir()
    from batcat_nb import config

    config._tool_batcat.cache_clear()
    monkeypatch.setenv("BATCAT_SAGEMAKER_IMAGE", ecr_image)
    monkeypatch.setenv("BATCAT_SAGEMAKER_SUBNETS", "subnet-1,subnet-2")
    try:
        notebook = write_notebook(project / "nb.ipynb", "x = 1")
        spec = api.resolve_spec(request_for(notebook, {"instance_type": "ml.m5.xlarge"}, "e"))
        cfg = config.resolve(sm.SageMakerConfig, "sagemaker", spec.backend_options)
        assert cfg.role == ROLE and cfg.s3_prefix == f"s3://{bucket}/p"
        assert cfg.instance_type == "ml.m5.xlarge"  # the argument wins over pyproject
        assert cfg.image == ecr_image and cfg.subnets == ["subnet-1", "subnet-2"]
        with pytest.raises(UsageError, match="unknown sagemaker option 'instance_typ'.*instance_type"):
            config.resolve(sm.SageMakerConfig, "sagemaker", {"instance_typ": "x"})
    finally:
        config._tool_batcat.cache_clear()


def test_studio_discovers_role_and_bucket(project, bucket, ecr_image, monkeypatch, tmp_path):
    import types

    metadata = tmp_path / "resource-metadata.json"
    metadata.write_text("{}")
    monkeypatch.setattr(sm, "STUDIO_METADATA", metadata)
    studio = types.ModuleType("sagemaker")
    studio.get_execution_role = lambda: ROLE  # type: ignore[attr-defined]
    studio.Session = lambda: types.SimpleNamespace(default_bucket=lambda: bucket)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sagemaker", studio)
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    spec = api.resolve_spec(request_for(notebook, {"image": ecr_image}, "e"))
    resolved = sm.SageMakerBackend()._resolve(spec)
    assert (resolved.role, resolved.bucket, resolved.prefix) == (ROLE, bucket, "batcat")


# ---------------------------------------------------------------------------------------------
# The request is checked against botocore's own model before it is sent


def valid_request(**changes: Any) -> dict[str, Any]:
    request = {
        "ProcessingJobName": "nb-20260101-000000-abcd",
        "RoleArn": ROLE,
        "AppSpecification": {"ImageUri": RUNNER_URI},
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 30}
        },
        "ProcessingInputs": [],
        "Environment": {},
    }
    request.update(changes)
    return request


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"ProcessingJobName": "bad_name!"}, "ProcessingJobName='bad_name!' does not match"),
        ({"ProcessingJobName": "x" * 64}, "ProcessingJobName has 64 characters, at most 63"),
        ({"RoleArn": "arn:aws:iam::123:user/me"}, "RoleArn="),
        ({"Environment": {f"V{i}": "1" for i in range(101)}}, "Environment has 101 entries, at most 100"),
        ({"Environment": {"LONG": "x" * 257}}, "Environment['LONG'] has 257 characters, at most 256"),
        ({"Environment": {"1BAD": "x"}}, "Environment key '1BAD'"),
        (
            {"ProcessingInputs": [{"InputName": f"i{i}", "S3Input": {}} for i in range(11)]},
            "ProcessingInputs",
        ),
        (
            {
                "ProcessingResources": {
                    "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.larg", "VolumeSizeInGB": 30}
                }
            },
            "did you mean 'ml.m5.large'",
        ),
        ({"AppSpecification": {}}, "Missing required parameter"),
    ],
)
def test_requests_aws_would_refuse_are_refused_before_sending(changes, problem):
    aws.validate_request("sagemaker", "CreateProcessingJob", valid_request())  # the base is valid
    with pytest.raises(UsageError, match="CreateProcessingJob request refused before sending") as refused:
        aws.validate_request("sagemaker", "CreateProcessingJob", valid_request(**changes))
    assert problem in str(refused.value)


# ---------------------------------------------------------------------------------------------
# Sequences moto cannot produce: botocore's Stubber


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch, aws_env: str) -> Any:
    """A real SageMaker client whose answers the test scripts; batcat gets it for 'sagemaker'."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("sagemaker", region_name=REGION)
    stubber = Stubber(client)
    real = sm.aws.client

    def client_for(service: str, region: str | None = None) -> Any:
        return client if service == "sagemaker" else real(service, region)

    monkeypatch.setattr(sm.aws, "client", client_for)
    with stubber:
        yield stubber
    stubber.assert_no_pending_responses()


def test_throttled_create_is_retried_with_backoff(stubbed):
    request = valid_request()
    for _ in range(2):
        stubbed.add_client_error("create_processing_job", "ThrottlingException", "Rate exceeded", 400)
    stubbed.add_response(
        "create_processing_job", {"ProcessingJobArn": "arn:aws:sagemaker:x:1:processing-job/j"}
    )
    slept: list[float] = []
    client = sm.aws.client("sagemaker")
    answer = aws.retry_call(client.create_processing_job, **request, sleep=slept.append, first_delay=0.5)
    assert answer["ProcessingJobArn"].endswith("/j")
    assert len(slept) == 2 and slept[1] > slept[0]  # backoff grows


def test_a_refusal_is_not_retried(stubbed):
    stubbed.add_client_error("create_processing_job", "ResourceLimitExceeded", "too many jobs", 400)
    with pytest.raises(Exception, match="too many jobs"):
        aws.retry_call(
            sm.aws.client("sagemaker").create_processing_job, **valid_request(), sleep=lambda s: None
        )


def test_polling_rides_out_throttling_and_follows_a_stop_through_stopping(
    stubbed, project, options, monkeypatch
):
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    spec = api.resolve_spec(request_for(notebook, options, "e"))
    handle = sm.SageMakerBackend().submit(spec)
    handle.job_arn = f"arn:aws:sagemaker:{REGION}:123456789012:processing-job/{spec.job_name}"
    name = {"ProcessingJobName": spec.job_name}

    def described(status: str) -> dict[str, Any]:
        return {
            "ProcessingJobName": spec.job_name,
            "ProcessingJobArn": handle.job_arn,
            "ProcessingJobStatus": status,
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.t3.medium", "VolumeSizeInGB": 30}
            },
            "AppSpecification": {"ImageUri": RUNNER_URI},
            "CreationTime": 0,
        }

    stubbed.add_response("describe_processing_job", described("InProgress"), name)
    stubbed.add_response("stop_processing_job", {}, name)
    stubbed.add_client_error("describe_processing_job", "ThrottlingException", "Rate exceeded", 400)
    stubbed.add_response("describe_processing_job", described("Stopping"), name)
    stubbed.add_response(
        "describe_processing_job", {**described("Stopped"), "ExitMessage": "stopped by SIGTERM"}, name
    )

    assert handle.status() == "RUNNING"
    handle.cancel("stopped by the user")
    assert handle._wait_for_exit(timeout=10)
    assert handle.description["ProcessingJobStatus"] == "Stopped"
    assert handle._exit_reason() == "stopped by SIGTERM"


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the problem and the fix, said before anything is uploaded


def _cli() -> Any:
    from batcat_nb.cli import cli

    return cli


def batcat(*args: str) -> tuple[int, str]:
    """``batcat ARGS`` in this process, through the same entry point as the command (main)."""
    runner = CliRunner()
    done = runner.invoke(_cli(), list(args), standalone_mode=False, catch_exceptions=True)
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        from batcat_nb.errors import BatcatError

        assert isinstance(done.exception, BatcatError), repr(done.exception)
        return 2, f"batcat: error: {done.exception}"
    return done.exit_code, done.output


def submit_args(notebook: Path, options: dict[str, Any], experiment: str) -> list[str]:
    args = ["submit", str(notebook), "-e", experiment]
    for key in ("role", "s3_prefix", "image", "region"):
        if options.get(key):
            args += [f"--{key.replace('_', '-')}", options[key]]
    return args


def assert_refused_before_anything(
    code: int, output: str, bucket: str, experiment: str, runs_of, *fragments: str
):
    assert code == 2, output
    assert output.startswith("batcat: error: ") and "\n" not in output.strip(), output
    for fragment in fragments:
        assert fragment in output, output
    assert s3_keys(bucket) == []  # nothing uploaded
    assert runs_of(experiment) == []  # no run created


def test_no_credentials(project, options, bucket, experiment, runs_of, monkeypatch):
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    aws.reset()
    code, output = batcat(*submit_args(notebook, options, experiment))
    monkeypatch.undo()
    aws.reset()
    assert_refused_before_anything(
        code, output, bucket, experiment, runs_of, "no AWS credentials", "aws configure"
    )


def test_no_region(project, options, bucket, experiment, runs_of, monkeypatch):
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION")
    aws.reset()
    code, output = batcat(*submit_args(notebook, options, experiment))
    monkeypatch.undo()
    aws.reset()
    assert_refused_before_anything(code, output, bucket, experiment, runs_of, "no AWS region", "--region")


def test_role_that_is_not_an_arn(project, options, bucket, experiment, runs_of):
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    code, output = batcat(*submit_args(notebook, {**options, "role": "SageMakerRole"}, experiment))
    assert_refused_before_anything(
        code, output, bucket, experiment, runs_of, "'SageMakerRole' is not an IAM role ARN", "arn:aws:iam::"
    )


def test_bucket_that_does_not_exist(project, options, bucket, experiment, runs_of):
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    code, output = batcat(
        *submit_args(notebook, {**options, "s3_prefix": "s3://no-such-bucket-here/x"}, experiment)
    )
    assert_refused_before_anything(
        code,
        output,
        bucket,
        experiment,
        runs_of,
        "bucket 'no-such-bucket-here' does not exist",
        "--s3-prefix",
    )


@pytest.mark.parametrize(
    "image",
    [
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/batcat-runner:not-pushed",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/no-such-repository:v1",
    ],
)
def test_image_that_is_not_in_the_registry(project, options, bucket, experiment, runs_of, image):
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    code, output = batcat(*submit_args(notebook, {**options, "image": image}, experiment))
    assert_refused_before_anything(
        code,
        output,
        bucket,
        experiment,
        runs_of,
        f"image {image} is not in the registry",
        "batcat build --push",
    )


def test_unknown_job(aws_env):
    code, output = batcat("status", "no-such-job")
    assert code == 2 and "no processing job named 'no-such-job'" in output and "batcat list" in output


# ---------------------------------------------------------------------------------------------
# batcat submit / list / status / logs / download


def test_submit_then_follow_then_download_completes_the_run(
    train, options, experiment, fake_sagemaker, runs_of
):
    args = [*submit_args(train, options, experiment), "--include", "helper.py"]
    args += ["--input", "data=data", "--output", "report=report", "--log-output", "--no-progress"]
    code, output = batcat(*args)
    assert code == 0, output
    job = output.splitlines()[0].strip()
    assert job.startswith("train-")
    (run,) = runs_of(experiment)
    assert run.info.status == "RUNNING"  # nobody waits: download completes it

    code, output = batcat("logs", job, "--follow")
    assert code == 0 and "rows ['a.csv']" in output
    code, output = batcat("status", job)
    assert code == 0 and "Completed (FINISHED)" in output and run.info.run_id in output
    code, output = batcat("list", "--name", "train-")
    assert code == 0 and job in output and "Completed" in output

    code, output = batcat("download", job, "-o", "fetched")
    assert code == 0, output
    assert (Path("fetched") / "train.ipynb").exists() and (Path("fetched") / "train.html").exists()
    assert (Path("fetched") / "report" / "report.txt").read_text() == "hello ['a.csv']"
    assert f"mlflow run {run.info.run_id} FINISHED" in output
    (run,) = runs_of(experiment)
    assert run.info.status == "FINISHED" and run.data.metrics == {"score": 1.0}
    code, again = batcat("download", job, "-o", "fetched")  # a second time changes nothing
    assert code == 0 and runs_of(experiment)[0].data.metrics == {"score": 1.0}


def _s3_text(bucket: str, key: str) -> str:
    import boto3

    return str(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode())


# ---------------------------------------------------------------------------------------------
# The real `batcat` command


def test_batcat_run_backend_sagemaker_from_the_shell(train, options, experiment, fake_sagemaker, runs_of):
    from conftest import run_batcat

    args = ["run", str(train), "-e", experiment, "--backend", "sagemaker", "--no-progress"]
    args += ["--role", options["role"], "--s3-prefix", options["s3_prefix"], "--image", options["image"]]
    args += ["--instance-type", "ml.t3.medium", "--include", "helper.py", "--input", "data=data"]
    args += ["--output", "report=report", "-p", "alpha", "3", "--env", "A=1"]
    done = run_batcat(*args)
    assert done.returncode == 0, done.stderr
    assert "FINISHED" in done.stdout and "score=6" in done.stdout
    (run,) = runs_of(experiment)
    assert run.info.status == "FINISHED" and run.data.tags[sm.TAG_REGION] == REGION

    done = run_batcat("run", str(train), "-e", experiment, "--backend", "sagemaker", "--role", "nope")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'nope' is not an IAM role ARN" in done.stderr


def test_default_ecr_repository_is_the_accounts(aws_env):
    uri = image_registry.ecr_repository_uri("batcat-runner")
    assert uri == "123456789012.dkr.ecr.us-east-1.amazonaws.com/batcat-runner"
    assert image_registry.ECR_IMAGE.fullmatch(uri + ":tag")


def test_a_rerun_runs_in_the_recorded_image_uri_and_cannot_build_from_an_environment(tmp_path):
    from batcat_nb.backends.base import RerunImage
    from batcat_nb.environment import Recorded

    recorded = RerunImage("r1", {TAG_IMAGE: RUNNER_URI}, {"role": ROLE, "image": "other:1"}, None, tmp_path)
    assert sm.SageMakerBackend.rerun_image(recorded) == ({"role": ROLE, "image": RUNNER_URI}, {})

    recorded.environment = Recorded("3.11", {"tabulate": "0.8.10"}, [])
    with pytest.raises(UsageError, match="SageMaker runs a pushed image"):
        sm.SageMakerBackend.rerun_image(recorded)


@pytest.mark.parametrize(
    "image",
    [
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/batcat-runner:v1",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/batcat-runner",
        "127.0.0.1:5000/batcat-runner@sha256:" + "0" * 64,
        "127.0.0.1:5000/batcat-runner:v1@sha256:" + "0" * 64,
    ],
)
def test_a_rerun_names_the_recorded_image_by_its_digest(image, tmp_path):
    from batcat_nb.backends.base import RerunImage

    digest = "sha256:" + "a" * 64
    repository = image.split("@")[0].removesuffix(":v1")
    tags = {TAG_IMAGE: image, "batcat.image.digest": digest}
    options, _ = sm.SageMakerBackend.rerun_image(RerunImage("r1", tags, {}, None, tmp_path))
    assert options["image"] == f"{repository}@{digest}"
