"""SageMaker end to end in the real runner image, built from the current source: the SageMaker
backend's own request, run by the fake SageMaker through the strict emulation (platform-owned
folders, the image's user, the request's network, entrypoint and environment), for both example
notebooks, a failing notebook and a stop. The image is also pushed to a real registry on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import ROLE, RUNNER_URI, docker_runner, s3_keys
from conftest import EXAMPLES, write_notebook

import batcat_nb
from batcat_nb import api
from batcat_nb.backends.sagemaker import jobs as sagemaker_jobs
from batcat_nb.backends.sagemaker import registry as image_registry
from batcat_nb.spec import RunRequest
from batcat_nb.tracking import TAG_IMAGE, TAG_IMAGE_DIGEST

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def pushed(runner: Any, local_registry: str, moto_server: str) -> Iterator[image_registry.PushResult]:
    """The runner image pushed once for the module, as `batcat build --push` does (ECR login)."""
    from batcat_nb.backends.sagemaker import aws

    aws.reset()
    repository = f"{local_registry}/batcat-runner-{uuid.uuid4().hex[:6]}"
    result = image_registry.push_image(runner.image.tag, repository, ecr=True)
    yield result
    aws.reset()
    with contextlib.suppress(Exception):  # the registry's name for the image, not the image
        from batcat_nb.backends.docker.container import docker_client

        docker_client().images.remove(result.uri)


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCAT_SAGEMAKER_POLL_INTERVAL", "0.5")


def registry_tags(address: str, repository: str) -> list[str]:
    with urllib.request.urlopen(f"http://{address}/v2/{repository}/tags/list", timeout=10) as answer:
        return list(json.load(answer)["tags"])


def test_push_creates_the_ecr_repository_logs_in_and_skips_what_the_registry_has(
    runner, pushed, local_registry, aws_env
):
    import boto3

    assert pushed.pushed and pushed.digest and pushed.digest.startswith("sha256:")
    repository, tag = pushed.uri.rsplit(":", 1)
    name = repository.split("/", 1)[1]
    assert registry_tags(local_registry, name) == [tag]
    found = boto3.client("ecr").describe_repositories(repositoryNames=[name])["repositories"]
    assert found[0]["repositoryName"] == name  # created because it was missing

    again = image_registry.push_image(runner.image.tag, repository, ecr=True)
    assert not again.pushed and again.digest == pushed.digest


def sagemaker_request(notebook: Path, bucket: str, experiment: str, image: str, **fields: Any) -> RunRequest:
    options = {
        "role": ROLE,
        "s3_prefix": f"s3://{bucket}/jobs",
        "image": image,
        "instance_type": "ml.t3.medium",
    }
    options.update(fields.pop("backend_options", {}))
    return RunRequest(
        notebook=str(notebook), backend="sagemaker", experiment=experiment, backend_options=options, **fields
    )


def manifest_in_s3(bucket: str, job: str) -> dict[str, Any]:
    import boto3

    body = boto3.client("s3").get_object(
        Bucket=bucket, Key=f"jobs/{job}/output/notebook/batcat-manifest.json"
    )
    return dict(json.loads(body["Body"].read()))


def test_train_example_runs_in_the_runner_image_and_its_run_completes_from_the_manifest(
    pushed, fake_sagemaker, mlflow_server, bucket, experiment, runs_of
):
    from mlflow.tracking import MlflowClient

    fake_sagemaker.runner = docker_runner()
    request = sagemaker_request(
        EXAMPLES / "train_diabetes.ipynb",
        bucket,
        experiment,
        pushed.uri,
        parameters={"alpha": 0.05},
        tracking_uri=mlflow_server,
    )
    result = api.run(request)

    assert result.status == "FINISHED", result.reason
    job = result.job_name
    sent = fake_sagemaker.requests[job]
    assert sent["AppSpecification"]["ImageUri"] == pushed.uri
    assert not any(k.startswith("MLFLOW_") for k in sent["Environment"])  # loopback: not reachable from AWS
    assert fake_sagemaker.outcomes[job].exit_code == 0
    assert manifest_in_s3(bucket, job)["status"] == "FINISHED"
    assert sagemaker_jobs.describe_job(job)["ProcessingJobStatus"] == "Completed"
    run = MlflowClient(mlflow_server).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert {"test.rmse", "test.r2"} <= set(run.data.metrics)  # completed from the job's manifest
    assert run.data.tags[TAG_IMAGE] == pushed.uri
    assert run.data.tags[TAG_IMAGE_DIGEST] == pushed.digest  # as the registry answered

    # a rerun runs that digest, not whatever the tag names by then
    again = batcat_nb.rerun(result.run_id, tracking_uri=mlflow_server, progress=False)
    assert again.result.status == "FINISHED", again.result.reason
    repository = pushed.uri.rsplit(":", 1)[0]
    assert (
        fake_sagemaker.requests[again.result.job_name]["AppSpecification"]["ImageUri"]
        == f"{repository}@{pushed.digest}"
    )


def test_sales_example_reads_its_input_and_writes_its_output_through_s3(
    in_runner_image, bucket, experiment, project, runs_of
):
    request = sagemaker_request(
        EXAMPLES / "sales_report.ipynb",
        bucket,
        experiment,
        RUNNER_URI,
        parameters={"min_units": 2},
        inputs={"input": str(EXAMPLES / "data" / "sales")},
        outputs={"output": f"s3://{bucket}/reports/sales"},
    )
    result = api.run(request)

    assert result.status == "FINISHED", result.reason
    assert "reports/sales/summary.csv" in s3_keys(bucket, "reports/")
    [run] = runs_of(experiment)
    assert run.data.metrics["total_revenue"] > 0
    assert in_runner_image.requests[result.job_name]["AppSpecification"]["ImageUri"] == RUNNER_URI


def test_failing_notebook_leaves_its_partial_notebook_and_manifest_in_s3(
    in_runner_image, bucket, experiment, project, runs_of
):
    notebook = write_notebook(
        project / "broken.ipynb", "x = 1", "print('reached', flush=True)", "raise ValueError('no data')"
    )
    result = api.run(sagemaker_request(notebook, bucket, experiment, RUNNER_URI))

    assert result.status == "FAILED"
    assert "ValueError: no data" in result.reason
    job = result.job_name
    keys = s3_keys(bucket, f"jobs/{job}/output/notebook/")
    assert f"jobs/{job}/output/notebook/broken.ipynb" in keys  # a Continuous channel: also after a failure
    manifest = manifest_in_s3(bucket, job)
    assert manifest["status"] == "FAILED" and manifest["error"]["ename"] == "ValueError"
    assert "reached" in Path(result.output_notebook).read_text()
    assert sagemaker_jobs.describe_job(job)["ProcessingJobStatus"] == "Failed"
    assert runs_of(experiment)[0].info.status == "FAILED"


def test_a_stopped_job_ends_killed_with_its_partial_notebook_in_s3(
    in_runner_image, bucket, experiment, project, runs_of
):
    import time

    notebook = write_notebook(
        project / "slow.ipynb", "x = 1", "print('started', flush=True)", "import time\ntime.sleep(300)"
    )
    handle = api.submit(sagemaker_request(notebook, bucket, experiment, RUNNER_URI, log_output=True))
    deadline = time.monotonic() + 120
    while "started" not in handle.logs():
        assert time.monotonic() < deadline, handle.logs()
        time.sleep(0.5)
    handle.cancel("stopped by the test")
    result = handle.wait(timeout=120)

    assert result.status == "KILLED"
    job = handle.job_name
    manifest = manifest_in_s3(bucket, job)
    assert (
        manifest["status"] == "KILLED" and manifest["reason"] == "stopped by SIGINT"
    )  # what Processing sends
    assert "started" in Path(result.output_notebook).read_text()
    assert sagemaker_jobs.describe_job(job)["ProcessingJobStatus"] == "Stopped"
    assert runs_of(experiment)[0].info.status == "KILLED"
