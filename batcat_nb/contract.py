"""SageMaker Processing's request: how batcat writes a job as ``create_processing_job``'s
keyword arguments, the platform's limits on it, and the outcome vocabulary of
``DescribeProcessingJob``. Every backend that runs the container contract builds its request here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from .errors import UsageError
from .includes import shipped_files
from .layout import CONTAINER_ROOT, JobLayout
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
    role_arn: str = "arn:aws:iam::000000000000:role/batcat-local",
    instance_type: str = "local",
    instance_count: int = 1,
    volume_gb: int = 30,
    max_runtime: int | None = None,
) -> dict[str, Any]:
    """``create_processing_job``'s keyword arguments for ``spec``; channels map names to URIs."""
    check_channels(inputs, outputs, uris=True)
    check_environment(environment)
    return {
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
                        "S3UploadMode": "EndOfJob",
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
    """``/opt/ml/config/processingjobconfig.json``: the request plus the job's ARN."""
    name = request["ProcessingJobName"]
    account = str(request.get("RoleArn", "")).split(":")[4:5] or ["000000000000"]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    keys = (
        "AppSpecification",
        "Environment",
        "NetworkConfig",
        "ProcessingInputs",
        "ProcessingOutputConfig",
        "ProcessingResources",
        "RoleArn",
        "StoppingCondition",
    )
    return {
        "ProcessingJobArn": f"arn:aws:sagemaker:{region}:{account[0]}:processing-job/{name.lower()}",
        "ProcessingJobName": name,
        **{key: request[key] for key in keys if key in request},
    }
