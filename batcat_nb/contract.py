"""SageMaker Processing's request: how batcat writes a job as ``create_processing_job``'s
keyword arguments, the platform's limits on it, and the outcome vocabulary of
``DescribeProcessingJob``. Every backend that runs the container contract builds its request here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from .errors import UsageError
from .includes import shipped_files
from .layout import CONTAINER_ROOT, NOTEBOOK_CHANNEL, JobLayout
from .redact import without_credentials
from .storage import is_s3

if TYPE_CHECKING:
    from .spec import JobSpec

WORKER_ENTRYPOINT = ["python", "-m", "batcat_nb.worker"]
HOSTNAME = "algo-1"
RUNNER_REPOSITORY = "batcat-runner"  # the runner image's name, locally and in ECR
MAX_INPUTS = 10
MAX_ENVIRONMENT = 100
MAX_ENV_VALUE = 256
DEFAULT_MAX_RUNTIME = 86400  # SageMaker's default limit: one day
COMPLETED, FAILED, STOPPED = "Completed", "Failed", "Stopped"
LOCAL_ROLE = "arn:aws:iam::000000000000:role/batcat-local"  # a Docker run's RoleArn without --role
PLATFORM = "linux/amd64"  # every Processing instance type is x86
# Uploaded as it is written: a failed or stopped job's partial notebook and manifest reach S3 on
# the platform too (whether EndOfJob outputs are uploaded after a failure is not documented).
CONTINUOUS_OUTPUTS = frozenset({NOTEBOOK_CHANNEL})
# Tags on the processing job, so that `batcat download JOB` finds the run to complete later.
JOB_TAG_RUN_ID = "batcat:mlflow-run-id"
JOB_TAG_EXPERIMENT_ID = "batcat:mlflow-experiment-id"
JOB_TAG_TRACKING_URI = "batcat:mlflow-tracking-uri"
JOB_TAG_NOTEBOOK = "batcat:notebook"
_TAG_VALUE = re.compile(r"[\w\s.:/=+\-@]{0,256}")
_TAG_VALUE_DROPPED = re.compile(r"[^\w\s.:/=+\-@]")  # SageMaker's TagValue pattern, negated

# vCPUs and memory (GiB) of Processing instance types: a Docker run given --instance-type gets
# the same, so a notebook that runs out of memory on its instance does so locally too.
_VCPUS = {"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16, "9xlarge": 36, "12xlarge": 48}
_VCPUS.update({"18xlarge": 72, "24xlarge": 96})
_GENERAL_SIZES = ("large", "xlarge", "2xlarge", "4xlarge", "12xlarge", "24xlarge")


def _family(family: str, gib_per_vcpu: int, sizes: tuple[str, ...]) -> dict[str, tuple[int, float]]:
    return {f"ml.{family}.{size}": (_VCPUS[size], _VCPUS[size] * gib_per_vcpu) for size in sizes}


INSTANCE_TYPES: dict[str, tuple[int, float]] = {
    "ml.t3.medium": (2, 4),
    **_family("t3", 4, ("large", "xlarge", "2xlarge")),
    **_family("m5", 4, _GENERAL_SIZES),
    **_family("c5", 2, ("xlarge", "2xlarge", "4xlarge", "9xlarge", "18xlarge")),
    **_family("r5", 8, _GENERAL_SIZES),
    **_family("g4dn", 4, ("xlarge", "2xlarge")),
    **_family("g5", 4, ("xlarge", "2xlarge")),
    "ml.p3.2xlarge": (8, 61),
}

CONTAINER = JobLayout(CONTAINER_ROOT)


@dataclass
class ProcessingOutcome:
    """How a processing job ended, as DescribeProcessingJob would say."""

    exit_code: int
    status: str  # Completed, Failed or Stopped
    failure_reason: str | None = None
    exit_message: str = ""
    oom_killed: bool = False


def build_request(
    spec: JobSpec,
    *,
    image: str,
    inputs: dict[str, str],
    outputs: dict[str, str],
    environment: dict[str, str],
    role_arn: str = LOCAL_ROLE,
    instance_type: str = "ml.m5.large",
    instance_count: int = 1,
    volume_gb: int = 30,
    max_runtime: int | None = None,
    tags: Mapping[str, str] | None = None,
    network_isolation: bool = False,
) -> dict[str, Any]:
    """``create_processing_job``'s keyword arguments for ``spec``; channels map names to URIs."""
    check_channels(inputs, outputs, uris=True)
    check_environment(environment)
    request: dict[str, Any] = {
        "ProcessingJobName": spec.job_name,
        "ProcessingInputs": [
            {
                "InputName": name,
                "S3Input": {
                    "S3Uri": uri,
                    "LocalPath": str(CONTAINER.input(name)),
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            }
            for name, uri in inputs.items()
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": name,
                    "S3Output": {
                        "S3Uri": uri,
                        "LocalPath": str(CONTAINER.output(name)),
                        "S3UploadMode": "Continuous" if name in CONTINUOUS_OUTPUTS else "EndOfJob",
                    },
                }
                for name, uri in outputs.items()
            ]
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": instance_count,
                "InstanceType": instance_type,
                "VolumeSizeInGB": volume_gb,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": int(max_runtime or DEFAULT_MAX_RUNTIME)},
        "AppSpecification": {"ImageUri": image, "ContainerEntrypoint": list(WORKER_ENTRYPOINT)},
        "Environment": dict(environment),
        "RoleArn": role_arn,
    }
    if network_isolation:
        request["NetworkConfig"] = {"EnableNetworkIsolation": True}
    if tags:
        request["Tags"] = [{"Key": key, "Value": tag_value(value)} for key, value in tags.items()]
    return request


def request_tags(spec: JobSpec) -> dict[str, str]:
    """The job's tags: the run's own, the notebook, and where its MLflow run lives."""
    tags = {**spec.tags, JOB_TAG_NOTEBOOK: spec.notebook_file}
    if spec.run_id:
        tags[JOB_TAG_RUN_ID] = spec.run_id
        tags[JOB_TAG_EXPERIMENT_ID] = spec.experiment_id or ""
    stored_uri = without_credentials(spec.tracking_uri)  # the user's own credentials reconnect
    if _TAG_VALUE.fullmatch(stored_uri):  # never altered: `batcat download` reads it back
        tags[JOB_TAG_TRACKING_URI] = stored_uri
    return {key: str(value) for key, value in tags.items()}


def on_loopback(uri: str) -> bool:
    """Does this http(s) URI name a server on this machine's loopback (localhost, 127.0.0.0/8, ::1)?"""
    import ipaddress

    host = urlparse(uri).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tag_value(text: str) -> str:
    """``text`` as a SageMaker tag value: characters its pattern refuses become ``_``, 256 at most.

    A notebook named ``Sales Report (v2).ipynb`` is refused as a tag value by SageMaker as is.
    """
    return _TAG_VALUE_DROPPED.sub("_", str(text))[:256]


def check_request(request: Mapping[str, Any]) -> None:
    """Everything SageMaker would refuse in ``request``, refused here: the one check of both the
    SageMaker submission and the Docker run (botocore's service model: at most 10 inputs and 10
    outputs, environment keys and values, MaxRuntimeInSeconds 1..777600, names, tag values)."""
    from .service_model import validate_request

    validate_request("sagemaker", "CreateProcessingJob", as_submitted(request))


def as_submitted(request: Mapping[str, Any]) -> dict[str, Any]:
    """``request`` with its local ``file://`` channels as the S3 URIs they would be staged to on
    SageMaker (the only part of a Docker run's request SageMaker would never see as is)."""
    copy = json.loads(json.dumps(request))
    channels = [item["S3Input"] for item in copy.get("ProcessingInputs", [])]
    channels += [item["S3Output"] for item in copy.get("ProcessingOutputConfig", {}).get("Outputs", [])]
    for channel in channels:
        if channel["S3Uri"].startswith("file://"):
            channel["S3Uri"] = "s3://local-channel" + local_path(channel["S3Uri"]).as_posix()
    return copy


def instance_resources(instance_type: str) -> tuple[int, float]:
    """(vCPUs, GiB of memory) of a Processing instance type; a UsageError naming the known ones."""
    try:
        return INSTANCE_TYPES[instance_type]
    except KeyError:
        from .errors import did_you_mean

        raise UsageError(
            f"instance type {instance_type!r} is not in batcat's table of Processing instances"
            f"{did_you_mean(instance_type, INSTANCE_TYPES)}; give --cpus and --memory instead"
        ) from None


def check_channels(inputs: Mapping[str, str], outputs: Mapping[str, str], uris: bool = False) -> None:
    """At most 10 inputs, no name both an input and an output; with ``uris``, s3:// or file:// only."""
    if len(inputs) > MAX_INPUTS:
        raise UsageError(f"{len(inputs)} inputs: a processing job takes at most {MAX_INPUTS}")
    both = sorted(set(inputs) & set(outputs))
    if both:
        raise UsageError(
            f"'{both[0]}' names both an input and an output (both would fill the parameter "
            f"{both[0]}_dir); give them different names"
        )
    for name, uri in [*inputs.items(), *outputs.items()] if uris else []:
        if not (is_s3(uri) or uri.startswith("file:///")):
            raise UsageError(f"channel '{name}': {uri!r} is neither s3://... nor file:///absolute/path")


def check_environment(environment: Mapping[str, str]) -> None:
    """SageMaker's limits: at most 100 variables, values of at most 256 characters."""
    if len(environment) > MAX_ENVIRONMENT:
        raise UsageError(f"{len(environment)} environment variables: a job takes at most {MAX_ENVIRONMENT}")
    for name, value in environment.items():
        if len(str(value)) > MAX_ENV_VALUE:
            raise UsageError(
                f"environment variable {name} is {len(str(value))} characters long; SageMaker allows "
                f"{MAX_ENV_VALUE}: pass long values as a file in an input"
            )


def include_paths(entries: Iterable[str]) -> list[Path]:
    """The ``--include`` entries as absolute paths, each checked to exist."""
    found = []
    for entry in entries:
        path = Path(entry).expanduser().resolve()
        if not path.exists():
            raise UsageError(f"--include {entry}: no such file or directory (relative to {Path.cwd()})")
        found.append(path)
    return found


def code_files(notebook: Path, include: Iterable[Path] = ()) -> list[tuple[Path, str]]:
    """The code channel's files and their paths in it: the notebook, then every ``include``d file
    (relative to the notebook's directory when inside it, else under the include's own name);
    a directory ships what ``includes.shipped_files`` lets through."""
    files = [(notebook, notebook.name)]
    for path in include:
        base = notebook.parent if path.is_relative_to(notebook.parent) else path.parent
        files += [(f, f.relative_to(base).as_posix()) for f in shipped_files(path)]
    return files


def stage_files(files: Iterable[tuple[Path, str]], destination: Path) -> None:
    """Hard-link (else copy) ``files`` into ``destination`` at their relative paths."""
    for source, relative in files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def file_uri(path: str | Path) -> str:
    """``file:///abs/path`` for a local directory."""
    return Path(path).resolve().as_uri()


def local_path(uri: str) -> Path:
    """The directory a ``file://`` URI names."""
    return Path(unquote(urlparse(uri).path))


def job_config(request: Mapping[str, Any]) -> dict[str, Any]:
    """``/opt/ml/config/processingjobconfig.json`` as the platform writes it: every field it fills
    in (defaults and nulls included), built from the request rather than copied from it."""
    name = request["ProcessingJobName"]
    account = str(request.get("RoleArn", "")).split(":")[4:5] or ["000000000000"]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    app = request["AppSpecification"]
    network = request.get("NetworkConfig") or {}
    cluster = request["ProcessingResources"]["ClusterConfig"]
    outputs = request.get("ProcessingOutputConfig", {})
    return {
        "ProcessingJobArn": f"arn:aws:sagemaker:{region}:{account[0]}:processing-job/{name.lower()}",
        "ProcessingJobName": name,
        "AppSpecification": {
            "ImageUri": app["ImageUri"],
            "ContainerEntrypoint": app.get("ContainerEntrypoint"),
            "ContainerArguments": app.get("ContainerArguments"),
        },
        "Environment": dict(request.get("Environment") or {}),
        "NetworkConfig": {
            "EnableInterContainerTrafficEncryption": bool(
                network.get("EnableInterContainerTrafficEncryption")
            ),
            "EnableNetworkIsolation": bool(network.get("EnableNetworkIsolation")),
            "VpcConfig": network.get("VpcConfig"),
        },
        "ProcessingInputs": [_input_config(item) for item in request.get("ProcessingInputs", [])],
        "ProcessingOutputConfig": {
            "Outputs": [_output_config(item) for item in outputs.get("Outputs", [])],
            "KmsKeyId": outputs.get("KmsKeyId"),
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": cluster["InstanceCount"],
                "InstanceType": cluster["InstanceType"],
                "VolumeSizeInGB": cluster["VolumeSizeInGB"],
                "VolumeKmsKeyId": cluster.get("VolumeKmsKeyId"),
            }
        },
        "RoleArn": request["RoleArn"],
        "StoppingCondition": {"MaxRuntimeInSeconds": request["StoppingCondition"]["MaxRuntimeInSeconds"]},
    }


def _input_config(item: Mapping[str, Any]) -> dict[str, Any]:
    s3 = item["S3Input"]
    return {
        "InputName": item["InputName"],
        "AppManaged": bool(item.get("AppManaged")),
        "S3Input": {
            "LocalPath": s3["LocalPath"],
            "S3Uri": s3["S3Uri"],
            "S3DataDistributionType": s3.get("S3DataDistributionType", "FullyReplicated"),
            "S3DataType": s3["S3DataType"],
            "S3InputMode": s3.get("S3InputMode", "File"),
            "S3CompressionType": s3.get("S3CompressionType", "None"),
            "S3DownloadMode": "StartOfJob",
        },
        "DatasetDefinition": None,
    }


def _output_config(item: Mapping[str, Any]) -> dict[str, Any]:
    s3 = item["S3Output"]
    return {
        "OutputName": item["OutputName"],
        "AppManaged": bool(item.get("AppManaged")),
        "S3Output": {"LocalPath": s3["LocalPath"], "S3Uri": s3["S3Uri"], "S3UploadMode": s3["S3UploadMode"]},
        "FeatureStoreOutput": None,
    }
