"""SageMaker end to end with the real runner image: pushed to a real registry on 127.0.0.1, run by
the fake SageMaker through the Docker backend's contract implementation, tracked on a real
MLflow server that the job reaches itself."""

from __future__ import annotations

import contextlib
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aws_fixtures import ROLE, docker_available, docker_runner, runner_image, s3_keys
from conftest import require, write_notebook

from batcat_nb import api
from batcat_nb.backends.sagemaker import jobs as sagemaker_jobs
from batcat_nb.backends.sagemaker import registry as image_registry
from batcat_nb.spec import RunRequest
from batcat_nb.tracking import TAG_IMAGE

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def runner() -> str:
    require(docker_available(), "a running Docker engine (scripts/provision_docker.sh)")
    image = runner_image()
    require(image is not None, "the batcat runner image (batcat build, or $BATCAT_TEST_RUNNER_IMAGE)")
    assert image is not None
    return image


@pytest.fixture(scope="module")
def pushed(runner: str, local_registry: str, moto_server: str) -> Iterator[image_registry.PushResult]:
    """The runner image pushed once for the module, as `batcat build --push` does (ECR login)."""
    from batcat_nb.backends.sagemaker import aws

    aws.reset()
    repository = f"{local_registry}/batcat-runner-{uuid.uuid4().hex[:6]}"
    result = image_registry.push_image(runner, repository, ecr=True)
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

    again = image_registry.push_image(runner, repository, ecr=True)
    assert not again.pushed and again.digest == pushed.digest


def test_notebook_runs_in_the_runner_image_and_its_run_completes(
    pushed, fake_sagemaker, mlflow_server, project, bucket, experiment
):
    from mlflow.tracking import MlflowClient

    fake_sagemaker.runner = docker_runner()
    (project / "helper.py").write_text("FACTOR = 3\n")
    notebook = write_notebook(
        project / "train.ipynb",
        "alpha = 1.0",
        "import batcat_nb, helper, mlflow\n"
        "batcat_nb.record('score', alpha * helper.FACTOR)\n"
        "mlflow.log_metric('from_inside', 7.0)",
    )
    request = RunRequest(
        notebook=str(notebook),
        backend="sagemaker",
        experiment=experiment,
        parameters={"alpha": 2.0},
        tracking_uri=mlflow_server,
        backend_options={
            "role": ROLE,
            "s3_prefix": f"s3://{bucket}/jobs",
            "image": pushed.uri,
            "include": ["helper.py"],
            "instance_type": "ml.t3.medium",
        },
    )
    result = api.run(request)

    assert result.status == "FINISHED", result.reason
    assert result.metrics == {"score": 6.0}
    assert Path(result.output_notebook).exists()
    job = result.job_name
    assert f"jobs/{job}/output/notebook/batcat-manifest.json" in s3_keys(bucket, f"jobs/{job}/")
    sent = fake_sagemaker.requests[job]
    assert sent["AppSpecification"]["ImageUri"] == pushed.uri
    assert sent["Environment"]["MLFLOW_RUN_ID"] == result.run_id  # the job logs to the server itself
    assert fake_sagemaker.outcomes[job].exit_code == 0
    assert sagemaker_jobs.describe_job(job)["ProcessingJobStatus"] == "Completed"
    run = MlflowClient(mlflow_server).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"score": 6.0, "from_inside": 7.0}
    assert run.data.tags[TAG_IMAGE] == pushed.uri
