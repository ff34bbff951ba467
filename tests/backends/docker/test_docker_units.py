"""The Docker backend's pieces that need no engine: requests, config, image keys, the wheel."""

from __future__ import annotations

import zipfile
from types import SimpleNamespace

import pytest

from batcat_nb.backends.docker import image as images
from batcat_nb.backends.docker.backend import docker_config
from batcat_nb.contract import build_request, check_request, file_uri, local_path
from batcat_nb.errors import ConfigError, UsageError


def make_request(**kwargs):
    defaults = dict(
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/batcat-runner:abc",
        inputs={"code": "s3://bucket/job/code", "batcat": "s3://bucket/job/batcat", "data": "s3://b/d"},
        outputs={"notebook": "s3://bucket/job/notebook", "report": "s3://b/r"},
        environment={"MLFLOW_RUN_ID": "abc"},
    )
    return build_request(SimpleNamespace(job_name="nb-20261127-120000-ab12"), **{**defaults, **kwargs})


def test_request_is_valid_for_the_sagemaker_service_model():
    """batcat's validator, not botocore's alone: botocore ignores enums and patterns."""
    from batcat_nb.backends.sagemaker.aws import validate_request

    role = "arn:aws:iam::123456789012:role/SageMakerRole"
    request = make_request(max_runtime=3600, instance_type="ml.m5.large", role_arn=role)
    validate_request("sagemaker", "CreateProcessingJob", request)
    # no instance type SageMaker knows (botocore's own validator lets it through): refused
    with pytest.raises(UsageError, match="InstanceType='local'"):
        validate_request(
            "sagemaker", "CreateProcessingJob", make_request(instance_type="local", role_arn=role)
        )


def test_request_follows_the_container_contract():
    request = make_request()
    [data] = [i for i in request["ProcessingInputs"] if i["InputName"] == "data"]
    assert data["S3Input"] == {
        "S3Uri": "s3://b/d",
        "LocalPath": "/opt/ml/processing/input/data",
        "S3DataType": "S3Prefix",
        "S3InputMode": "File",
    }
    [report] = [o for o in request["ProcessingOutputConfig"]["Outputs"] if o["OutputName"] == "report"]
    assert report["S3Output"]["LocalPath"] == "/opt/ml/processing/output/report"
    assert report["S3Output"]["S3UploadMode"] == "EndOfJob"
    assert request["AppSpecification"]["ContainerEntrypoint"] == ["python", "-m", "batcat_nb.worker"]
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1


def test_request_refuses_what_sagemaker_would():
    with pytest.raises(UsageError, match="'data' names both an input and an output"):
        make_request(inputs={"data": "s3://b/in"}, outputs={"data": "s3://b/out"})
    with pytest.raises(UsageError, match="at most 10"):
        make_request(inputs={f"i{n}": "s3://b/x" for n in range(11)})
    with pytest.raises(UsageError, match="SageMaker allows 256"):
        make_request(environment={"LONG": "x" * 300})
    with pytest.raises(UsageError, match="neither s3://"):
        make_request(inputs={"rel": "data/sales"})


def test_file_uris_round_trip(tmp_path):
    odd = tmp_path / "with space" / "and#hash"
    assert local_path(file_uri(odd)) == odd


def test_docker_options_come_from_config_env_and_arguments(monkeypatch):
    monkeypatch.setenv("BATCAT_DOCKER_MEMORY", "2g")
    monkeypatch.setenv("BATCAT_DOCKER_ENV", "A=1,B=x=y")
    config = docker_config({"cpus": 1.5})
    assert (config.memory, config.cpus) == ("2g", 1.5)
    assert config.environment() == {"A": "1", "B": "x=y"}
    assert docker_config({"env": {"C": 3}}).environment() == {"C": "3"}
    assert docker_config({"user": "image"}).container_user() is None


def test_bad_docker_options_are_refused():
    with pytest.raises(ConfigError, match="did you mean 'memory'"):
        docker_config({"memroy": "1g"})
    with pytest.raises(ConfigError, match="not a size"):
        docker_config({"memory": "lots"})
    with pytest.raises(ConfigError, match="--env takes NAME=VALUE"):
        docker_config({"env": ["NOVALUE"]})


def test_comments_in_requirements_do_not_change_the_image(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("pandas\nscikit-learn  # models\n")
    second.write_text("# the project's needs\npandas\n\nscikit-learn\n")
    assert images._requirement_lines(first) == images._requirement_lines(second)


def test_batcat_wheel_is_reproducible_and_carries_the_papermill_engine(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = images.build_batcat_wheel(tmp_path / "a"), images.build_batcat_wheel(tmp_path / "b")
    assert one.read_bytes() == two.read_bytes()
    with zipfile.ZipFile(one) as wheel:
        names = wheel.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert "batcat_nb/worker.py" in names and f"{dist_info}/RECORD" in names
        assert (
            "batcat = batcat_nb.engine:BatcatEngine" in wheel.read(f"{dist_info}/entry_points.txt").decode()
        )


def test_instance_type_gives_the_container_its_vcpus_and_memory(monkeypatch):
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    resources = docker_config({"instance_type": "ml.m5.large"}).resources()
    assert (resources.cpus, resources.memory) == (2, "8192m")  # 2 vCPUs, 8 GiB
    resources = docker_config({"instance_type": "ml.r5.xlarge", "memory": "1g"}).resources()
    assert (resources.cpus, resources.memory) == (4, "1g")  # an explicit --memory wins
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert docker_config({"instance_type": "ml.m5.4xlarge"}).resources().cpus == 2  # what this host has
    with pytest.raises(UsageError, match="did you mean 'ml.m5.large'"):
        docker_config({"instance_type": "ml.m5.larg"})


def test_network_isolation_and_another_network_contradict():
    with pytest.raises(ConfigError, match="contradicts --network-isolation"):
        docker_config({"network_isolation": True, "network": "host"})
    assert docker_config({}).container_user() is None  # the image's own USER, as on SageMaker


def test_notebook_channel_uploads_continuously_and_tag_values_follow_sagemakers_pattern():
    request = make_request(tags={"batcat:notebook": "Sales Report (v2).ipynb"})
    modes = {
        o["OutputName"]: o["S3Output"]["S3UploadMode"] for o in request["ProcessingOutputConfig"]["Outputs"]
    }
    assert modes == {"notebook": "Continuous", "report": "EndOfJob"}  # a failed job's notebook reaches S3
    assert request["Tags"] == [{"Key": "batcat:notebook", "Value": "Sales Report _v2_.ipynb"}]
    check_request(request)


def test_a_local_run_of_an_image_sagemaker_cannot_run_says_so(caplog):
    from batcat_nb.backends.docker.backend import warn_if_not_for_sagemaker

    with caplog.at_level("WARNING", logger="batcat_nb"):
        warn_if_not_for_sagemaker(images.RunnerImage("x:1", "sha256:1", "", False, architecture="amd64"))
        assert caplog.text == ""
        warn_if_not_for_sagemaker(images.RunnerImage("x:1", "sha256:1", "", False, architecture="arm64"))
    assert "image x:1 is built for arm64; SageMaker runs linux/amd64 only" in caplog.text
