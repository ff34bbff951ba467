"""The SageMaker backend: a notebook job as a SageMaker Processing job, S3 in and out.

``submit`` stages the notebook, ``--include`` files and ``job.json`` under
``<s3-prefix>/<job>/input/``; once the MLflow run exists the processing job is created (its
request built by ``batcat_nb.processing.build_request``, the one the Docker backend runs too,
and checked against botocore's service model first). ``wait`` polls the job with backoff while
its CloudWatch log events stream here, then fetches ``<s3-prefix>/<job>/output/notebook/``
(executed notebook, HTML, manifest) into the output directory, from which the MLflow run is
completed. Only boto3 is used on this path; the ``sagemaker`` SDK is imported in SageMaker
Studio alone, to discover the role and default bucket.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import aws
from ..errors import BackendError, UsageError
from ..layout import CODE_CHANNEL, JOB_CHANNEL, NOTEBOOK_CHANNEL
from ..manifest import FAILED, FINISHED, KILLED, RUNNING
from ..spec import JobSpec
from ..storage import is_s3, split_s3
from .base import JobHandle

log = logging.getLogger("batcat_nb")

LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
STUDIO_METADATA = Path("/opt/ml/metadata/resource-metadata.json")
TERMINAL = frozenset({"Completed", "Failed", "Stopped"})
STATUS = {
    "InProgress": RUNNING,
    "Stopping": RUNNING,
    "Completed": FINISHED,
    "Failed": FAILED,
    "Stopped": KILLED,
}
STOPPED_BY_USER = "stopped (StopProcessingJob)"

# MLflow tags of a SageMaker run (the job name is also batcat.job_name).
TAG_JOB_ARN = "batcat.sagemaker.job_arn"
TAG_REGION = "batcat.sagemaker.region"
TAG_IMAGE = "batcat.sagemaker.image"
TAG_CONSOLE = "batcat.sagemaker.console"
TAG_FAILURE_REASON = "batcat.sagemaker.failure_reason"
TAG_EXIT_MESSAGE = "batcat.sagemaker.exit_message"

# Tags on the processing job, so that `batcat download JOB` finds the run to complete later.
JOB_TAG_RUN_ID = "batcat:mlflow-run-id"
JOB_TAG_EXPERIMENT_ID = "batcat:mlflow-experiment-id"
JOB_TAG_TRACKING_URI = "batcat:mlflow-tracking-uri"
JOB_TAG_NOTEBOOK = "batcat:notebook"
_TAG_VALUE = re.compile(r"[\w\s.:/=+\-@]{0,256}")

ECR_IMAGE = re.compile(
    r"(?P<registry>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/(?P<repository>[^:@]+)(?::(?P<tag>[^@]+))?(?:@(?P<digest>.+))?"
)
IMAGE_REF = re.compile(
    r"(?P<host>[^/]+[.:][^/]*|localhost)/(?P<repository>[^:@]+)(?::(?P<tag>[^@]+))?(?:@(?P<digest>.+))?"
)


@dataclasses.dataclass
class SageMakerConfig:
    """``[tool.batcat.sagemaker]``, ``BATCAT_SAGEMAKER_*`` or the run's options."""

    role: str | None = None  # IAM role ARN the job runs as
    s3_prefix: str | None = None  # s3://bucket/prefix: <prefix>/<job>/{input,output}/
    region: str | None = None
    image: str | None = None  # runner image URI (batcat build --push prints it)
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    volume_size: int = 30  # GB
    max_runtime: int | None = None  # seconds; default: --timeout plus 10 minutes, else 24 h
    subnets: list[str] | None = None
    security_groups: list[str] | None = None
    kms_key: str | None = None  # KMS key for the outputs and the instance volume
    env: dict[str, str] | str | None = None  # NAME=VALUE,... from the environment or pyproject
    include: list[str] | None = None  # files or directories staged beside the notebook
    poll_interval: float = 30.0  # longest wait between two status polls, seconds
    check_image: bool = True  # look the image up in its registry before submitting


@dataclasses.dataclass
class _Resolved:
    """What validation worked out once, reused by submit."""

    config: SageMakerConfig
    region: str
    role: str
    bucket: str
    prefix: str  # key prefix, no trailing slash
    image: str
    env: dict[str, str]
    include: list[Path]

    def job_uri(self, job_name: str, *parts: str) -> str:
        key = "/".join(filter(None, [self.prefix, job_name, *parts]))
        return f"s3://{self.bucket}/{key}/"


class SageMakerBackend:
    """Runs jobs as SageMaker Processing jobs."""

    name = "sagemaker"

    def __init__(self) -> None:
        self._resolved: dict[str, _Resolved] = {}

    def validate(self, spec: JobSpec) -> None:
        """Credentials, region, role, bucket, image, request: all before anything is uploaded."""
        self._resolve(spec)

    def submit(self, spec: JobSpec) -> SageMakerHandle:
        resolved = self._resolved.pop(spec.job_name, None) or self._resolve(spec)
        return SageMakerHandle(spec, resolved)

    def _resolve(self, spec: JobSpec) -> _Resolved:
        from ..config import resolve

        config = resolve(SageMakerConfig, "sagemaker", spec.backend_options)
        region = aws.resolve_region(config.region)
        aws.check_credentials(region)
        role, s3_prefix = config.role, config.s3_prefix
        if not role or not s3_prefix:
            studio_role, studio_prefix = studio_defaults()
            role, s3_prefix = role or studio_role, s3_prefix or studio_prefix
        if not role:
            raise UsageError(
                "no IAM role for the job; pass --role arn:aws:iam::ACCOUNT_ID:role/NAME "
                "(or set BATCAT_SAGEMAKER_ROLE, or role = ... in [tool.batcat.sagemaker])"
            )
        aws.check_role_arn(role)
        if not s3_prefix:
            raise UsageError(
                "no S3 location for the job's files; pass --s3-prefix s3://BUCKET/PREFIX "
                "(or set BATCAT_SAGEMAKER_S3_PREFIX, or s3_prefix = ... in [tool.batcat.sagemaker])"
            )
        if not is_s3(s3_prefix):
            raise UsageError(f"--s3-prefix {s3_prefix!r} is not an S3 URI; write s3://BUCKET/PREFIX")
        bucket, prefix = split_s3(s3_prefix)
        if not config.image:
            raise UsageError(
                "no runner image; build and push it with `batcat build --push --repository URI` "
                "and pass the URI it prints as --image (or set BATCAT_SAGEMAKER_IMAGE)"
            )
        if bool(config.subnets) != bool(config.security_groups):
            raise UsageError("a VPC needs both --subnet and --security-group (each may be repeated)")
        resolved = _Resolved(
            config=config,
            region=region,
            role=role,
            bucket=bucket,
            prefix=prefix.strip("/"),
            image=config.image,
            env=_env_pairs(config.env),
            include=_includes(config.include or []),
        )
        for destination in spec.outputs.values():
            if is_s3(destination):
                split_s3(destination)
        draft = _request(spec, resolved, _draft_tracking_env(spec))
        aws.validate_request("sagemaker", "CreateProcessingJob", draft)
        check_bucket(bucket, region)
        if config.check_image:
            check_image(resolved.image, region)
        if config.instance_count > 1:
            log.warning(
                "%d instances each run the whole notebook; their outputs share one S3 prefix",
                config.instance_count,
            )
        self._resolved[spec.job_name] = resolved
        return resolved


def studio_defaults() -> tuple[str | None, str | None]:
    """Role and ``s3://<default bucket>/batcat`` in SageMaker Studio; (None, None) elsewhere."""
    if not STUDIO_METADATA.exists():
        return None, None
    try:
        import sagemaker
    except ImportError:
        log.warning("in SageMaker Studio, the role and bucket are discovered with: pip install sagemaker")
        return None, None
    try:
        role = sagemaker.get_execution_role()
        bucket = sagemaker.Session().default_bucket()
    except Exception as exc:
        log.warning("could not discover the Studio role and bucket: %s", exc)
        return None, None
    return role, f"s3://{bucket}/batcat"


_checked_buckets: set[tuple[str, str]] = set()


def check_bucket(bucket: str, region: str) -> None:
    """The bucket exists and these credentials reach it (asked once per process)."""
    if (bucket, region) in _checked_buckets:
        return
    try:
        aws.client("s3", region).head_bucket(Bucket=bucket)
    except Exception as exc:
        code = aws.error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise UsageError(
                f"S3 bucket {bucket!r} does not exist; create it (aws s3 mb s3://{bucket}) "
                "or pass another --s3-prefix"
            ) from None
        if code in ("403", "AccessDenied"):
            raise UsageError(f"S3 bucket {bucket!r} exists but these credentials cannot use it") from None
        raise aws.translate(exc, f"checking S3 bucket {bucket!r}") from None
    _checked_buckets.add((bucket, region))


_checked_images: set[tuple[str, str]] = set()


def check_image(image: str, region: str) -> None:
    """The image is in its registry (asked once per process): ECR through its API, else over HTTP."""
    if (image, region) in _checked_images:
        return
    ecr = ECR_IMAGE.fullmatch(image)
    ref = IMAGE_REF.fullmatch(image)
    if ecr:
        _check_ecr_image(image, ecr, region)
    elif ref:
        _check_registry_image(image, ref)
    else:
        raise UsageError(
            f"image {image!r} names no registry; SageMaker pulls from ECR: push it with "
            "`batcat build --push` and pass the URI it prints as --image"
        )
    _checked_images.add((image, region))


def _check_ecr_image(image: str, match: re.Match[str], region: str) -> None:
    image_id = {"imageDigest": match["digest"]} if match["digest"] else {"imageTag": match["tag"] or "latest"}
    ecr = aws.client("ecr", match["region"] or region)
    try:
        ecr.describe_images(
            registryId=match["registry"], repositoryName=match["repository"], imageIds=[image_id]
        )
    except Exception as exc:
        code = aws.error_code(exc)
        if code in ("RepositoryNotFoundException", "ImageNotFoundException"):
            what = "repository" if code.startswith("Repository") else "image"
            raise UsageError(
                f"image {image} is not in the registry ({what} not found); push it with "
                "`batcat build --push` or pass an existing --image URI"
            ) from None
        raise aws.translate(exc, f"looking up image {image}") from None


def _check_registry_image(image: str, match: re.Match[str]) -> None:
    import urllib.error
    import urllib.request

    reference = match["digest"] or match["tag"] or "latest"
    host = match["host"]
    scheme = "http" if host.startswith(("127.", "localhost", "[::1]")) else "https"
    request = urllib.request.Request(
        f"{scheme}://{host}/v2/{match['repository']}/manifests/{reference}",
        method="HEAD",
        headers={"Accept": ", ".join(_MANIFEST_TYPES)},
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            return
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise UsageError(
                f"image {image} is not in the registry; push it with `batcat build --push` "
                "or pass an existing --image URI"
            ) from None
        log.debug("registry check of %s: HTTP %s; not checked", image, exc.code)  # e.g. 401
    except (urllib.error.URLError, OSError) as exc:
        raise UsageError(f"the registry of image {image} does not answer ({exc})") from None


_MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)


def _env_pairs(value: dict[str, str] | str | None) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    pairs = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, sep, rest = part.partition("=")
        if not sep or not name:
            raise UsageError(f"environment entry {part!r} is not NAME=VALUE")
        pairs[name] = rest
    return pairs


def _includes(paths: Iterable[str]) -> list[Path]:
    found = []
    for path in paths:
        resolved = Path(path).expanduser().resolve()
        if not resolved.exists():
            raise UsageError(f"--include {path}: no such file or directory (relative to {Path.cwd()})")
        found.append(resolved)
    return found


def _tracking_reachable(uri: str) -> bool:
    """Can a job on AWS log to this store itself? A server or a SageMaker managed MLflow can."""
    return uri.startswith(("http://", "https://", "arn:"))


def _draft_tracking_env(spec: JobSpec) -> dict[str, str]:
    if not _tracking_reachable(spec.tracking_uri):
        return {}
    return {
        "MLFLOW_TRACKING_URI": spec.tracking_uri,
        "MLFLOW_RUN_ID": "0" * 32,
        "MLFLOW_EXPERIMENT_ID": "0" * 19,
    }


def _channels(spec: JobSpec, resolved: _Resolved) -> tuple[dict[str, str], dict[str, str]]:
    """Input and output channels: name -> S3 URI, the reserved ones included."""
    job = spec.job_name
    inputs = {
        CODE_CHANNEL: resolved.job_uri(job, "input", CODE_CHANNEL),
        JOB_CHANNEL: resolved.job_uri(job, "input", JOB_CHANNEL),
    }
    for name, source in spec.inputs.items():
        inputs[name] = source if is_s3(source) else resolved.job_uri(job, "input", name)
    outputs = {NOTEBOOK_CHANNEL: resolved.job_uri(job, "output", NOTEBOOK_CHANNEL)}
    for name, destination in spec.outputs.items():
        outputs[name] = destination if is_s3(destination) else resolved.job_uri(job, "output", name)
    return inputs, outputs


def _request(spec: JobSpec, resolved: _Resolved, tracking_env: dict[str, str]) -> dict[str, Any]:
    """The CreateProcessingJob request: the Docker backend's, plus what only AWS has."""
    from ..processing import build_request

    config = resolved.config
    inputs, outputs = _channels(spec, resolved)
    max_runtime = config.max_runtime
    if max_runtime is None:
        max_runtime = int(spec.timeout) + 600 if spec.timeout else 24 * 3600
    request = build_request(
        spec,
        image=resolved.image,
        inputs=inputs,
        outputs=outputs,
        environment={**resolved.env, **tracking_env},
        role_arn=resolved.role,
        instance_type=config.instance_type,
        instance_count=config.instance_count,
        volume_gb=config.volume_size,
        max_runtime=max_runtime,
    )
    if config.subnets:
        request.setdefault("NetworkConfig", {})["VpcConfig"] = {
            "Subnets": list(config.subnets),
            "SecurityGroupIds": list(config.security_groups or []),
        }
    if config.kms_key:
        request["ProcessingOutputConfig"]["KmsKeyId"] = config.kms_key
        request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] = config.kms_key
    tags = {**spec.tags, JOB_TAG_NOTEBOOK: spec.notebook_file}
    if spec.run_id:
        tags[JOB_TAG_RUN_ID] = spec.run_id
        tags[JOB_TAG_EXPERIMENT_ID] = spec.experiment_id or ""
    if _TAG_VALUE.fullmatch(spec.tracking_uri):
        tags[JOB_TAG_TRACKING_URI] = spec.tracking_uri
    request["Tags"] = [{"Key": k, "Value": str(v)} for k, v in tags.items()]
    return request


def console_url(region: str, job_name: str) -> str:
    return (
        f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/processing-jobs/{job_name}"
    )


class SageMakerHandle(JobHandle):
    """A job staged in S3; the processing job is created once its MLflow run exists."""

    def __init__(
        self, spec: JobSpec, resolved: _Resolved, on_log: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(spec)
        self.resolved = resolved
        self.region = resolved.region
        self.job_arn: str | None = None
        self.description: dict[str, Any] = {}
        self.output_dir = Path(spec.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._log_lines: list[str] = []
        self._echo = on_log or (_echo_stderr if spec.log_output or spec.progress else None)
        self._wake = threading.Event()
        self._stop_requested = False
        self._inputs, self._outputs = _channels(spec, resolved)
        self._stage()

    # -- submission -------------------------------------------------------------------------

    def _stage(self) -> None:
        """Upload the notebook, --include files, job.json and local inputs."""
        spec, resolved = self.spec, self.resolved
        s3 = aws.client("s3", self.region)
        uploads: list[tuple[Path, str]] = [(Path(spec.notebook), spec.notebook_file)]
        notebook_dir = Path(spec.notebook).parent
        for path in resolved.include:
            base = notebook_dir if path.is_relative_to(notebook_dir) else path.parent
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            uploads += [(f, f.relative_to(base).as_posix()) for f in files]
        try:
            code_bucket, code_key = split_s3(self._inputs[CODE_CHANNEL])
            for path, relative in uploads:
                s3.upload_file(str(path), code_bucket, code_key + relative)
            job_bucket, job_key = split_s3(self._inputs[JOB_CHANNEL])
            body = json.dumps(spec.worker_job(), indent=2).encode()
            s3.put_object(Bucket=job_bucket, Key=job_key + "job.json", Body=body)
            for name, source in spec.inputs.items():
                if not is_s3(source):
                    upload_tree(s3, Path(source), self._inputs[name])
        except Exception as exc:
            raise aws.translate(
                exc, f"staging {spec.job_name} in {resolved.job_uri(spec.job_name)}"
            ) from None
        log.debug("staged %s under %s", spec.job_name, resolved.job_uri(spec.job_name))

    def _on_attach(self) -> None:
        """Create the processing job, now that its MLflow run exists, and tag the run with it."""
        assert self.tracker is not None and self.spec.run_id and self.spec.experiment_id
        if self._stop_requested:
            return
        from ..tracking import run_env

        tracking = {}
        if _tracking_reachable(self.tracker.uri):
            tracking = run_env(self.tracker.uri, self.spec.run_id, self.spec.experiment_id)
        request = _request(self.spec, self.resolved, tracking)
        try:
            aws.validate_request("sagemaker", "CreateProcessingJob", request)
            sagemaker = aws.client("sagemaker", self.region)
            self.job_arn = aws.retry_call(sagemaker.create_processing_job, **request)["ProcessingJobArn"]
        except Exception as exc:
            error = exc if isinstance(exc, UsageError) else aws.translate(exc, f"creating {self.job_name}")
            self.tracker.fail_run(self.spec.run_id, FAILED, str(error))
            raise error from None
        log.info("submitted %s (%s)", self.job_name, console_url(self.region, self.job_name))
        self._tag_run(
            {
                TAG_JOB_ARN: self.job_arn or "",
                TAG_REGION: self.region,
                TAG_IMAGE: self.resolved.image,
                TAG_CONSOLE: console_url(self.region, self.job_name),
            }
        )

    def _tag_run(self, tags: dict[str, str]) -> None:
        if self.tracker is None or not self.spec.run_id:
            return
        from mlflow.entities import RunTag

        try:
            self.tracker.client.log_batch(
                self.spec.run_id, tags=[RunTag(k, v[:5000]) for k, v in tags.items()]
            )
        except Exception as exc:
            log.warning("could not tag the MLflow run of %s: %s", self.job_name, exc)

    # -- following ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        self.description = describe_job(self.job_name, self.region)
        return self.description

    def status(self) -> str:
        if self._result is not None:
            return self._result.status
        if self.job_arn is None:
            return KILLED if self._stop_requested else RUNNING
        return STATUS.get(self.describe().get("ProcessingJobStatus", ""), RUNNING)

    def _wait_for_exit(self, timeout: float | None) -> bool:
        if self.job_arn is None:
            return True  # never created: it ends without a manifest
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = self.resolved.config.poll_interval
        follower = self._follower()
        for delay in aws.backoff(first=min(1.0, poll), cap=poll):
            try:
                status = self.describe().get("ProcessingJobStatus")
            except BackendError as exc:
                if not aws.is_retryable(exc.__cause__ or exc):
                    raise
                status = None
            self._emit(follower.poll())
            if status in TERMINAL:
                self._emit(follower.poll())  # events written just before the end
                if status == "Stopped" and not self._cancel_reason:
                    self._cancel_reason = STOPPED_BY_USER
                return True
            if deadline is not None and time.monotonic() + delay > deadline:
                return False
            self._wake.wait(delay)
            self._wake.clear()
        return False

    def _follower(self) -> LogFollower:
        if not hasattr(self, "_log_follower"):
            self._log_follower = LogFollower(self.job_name, self.region)
        return self._log_follower

    def _emit(self, lines: list[str]) -> None:
        if not lines:
            return
        self._log_lines += lines
        with self.log_path.open("a", encoding="utf-8") as file:
            file.writelines(line + "\n" for line in lines)
        if self._echo is not None:
            for line in lines:
                self._echo(line)

    def _fetch_outputs(self) -> Path | None:
        if self.job_arn is None:
            return None
        description = self.description or self.describe()
        failure = description.get("FailureReason", "")
        message = description.get("ExitMessage", "")
        if failure or message:
            if description.get("ProcessingJobStatus") == "Failed":
                log.warning("%s failed on SageMaker: %s", self.job_name, self._exit_reason())
            self._tag_run(
                {TAG_FAILURE_REASON: failure, TAG_EXIT_MESSAGE: message}
                if failure
                else {TAG_EXIT_MESSAGE: message}
            )
        s3 = aws.client("s3", self.region)
        try:
            download_tree(s3, self._outputs[NOTEBOOK_CHANNEL], self.output_dir)
            for name, destination in self.spec.outputs.items():
                if not is_s3(destination):
                    download_tree(s3, self._outputs[name], Path(destination))
        except Exception as exc:
            log.warning("could not fetch the outputs of %s: %s", self.job_name, aws.reason(exc))
        return self.output_dir

    def logs(self) -> str:
        if self.job_arn is not None and self._result is None:
            self._emit(self._follower().poll())
        return "\n".join(self._log_lines)

    def _stop(self) -> None:
        self._stop_requested = True
        self._wake.set()
        if self.job_arn is None:
            return
        stop_job(self.job_name, self.region)

    def _exit_reason(self) -> str:
        description = self.description
        parts = [description.get("FailureReason", ""), description.get("ExitMessage", "")]
        return "; ".join(dict.fromkeys(p.strip() for p in parts if p and p.strip()))


def _echo_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# Jobs by name: what `batcat status/logs/stop/list/download` use.


def describe_job(job_name: str, region: str | None = None) -> dict[str, Any]:
    sagemaker = aws.client("sagemaker", region)
    try:
        return dict(aws.retry_call(sagemaker.describe_processing_job, ProcessingJobName=job_name))
    except Exception as exc:
        if aws.error_code(exc) == "ValidationException" and "not find" in aws.reason(exc).lower():
            raise UsageError(
                f"no processing job named {job_name!r}; `batcat list` shows the recent ones"
            ) from None
        raise aws.translate(exc, f"describing {job_name}") from exc


def stop_job(job_name: str, region: str | None = None) -> bool:
    """Ask SageMaker to stop the job; False when it had already ended."""
    sagemaker = aws.client("sagemaker", region)
    try:
        aws.retry_call(sagemaker.stop_processing_job, ProcessingJobName=job_name)
    except Exception as exc:
        if aws.error_code(exc) == "ValidationException":
            status = describe_job(job_name, region).get("ProcessingJobStatus")
            if status in TERMINAL or status == "Stopping":
                return False
        raise aws.translate(exc, f"stopping {job_name}") from None
    return True


def list_jobs(
    region: str | None = None, limit: int = 20, status: str | None = None, name: str | None = None
) -> list[dict[str, Any]]:
    """The most recent processing jobs, newest first."""
    sagemaker = aws.client("sagemaker", region)
    query: dict[str, Any] = {
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": min(limit, 100),
    }
    if status:
        query["StatusEquals"] = status
    if name:
        query["NameContains"] = name
    found: list[dict[str, Any]] = []
    try:
        for page in sagemaker.get_paginator("list_processing_jobs").paginate(**query):
            found += page.get("ProcessingJobSummaries", [])
            if len(found) >= limit:
                break
    except Exception as exc:
        raise aws.translate(exc, "listing processing jobs") from None
    found.sort(key=lambda job: job.get("CreationTime") or 0, reverse=True)
    return found[:limit]


def output_uris(description: dict[str, Any]) -> dict[str, str]:
    """Output channel name -> S3 URI, from a DescribeProcessingJob answer."""
    outputs = description.get("ProcessingOutputConfig", {}).get("Outputs", [])
    return {o["OutputName"]: o["S3Output"]["S3Uri"] for o in outputs if "S3Output" in o}


def job_tags(description: dict[str, Any], region: str | None = None) -> dict[str, str]:
    tags = description.get("Tags")
    if tags is None:
        try:
            tags = aws.client("sagemaker", region).list_tags(ResourceArn=description["ProcessingJobArn"])[
                "Tags"
            ]
        except Exception as exc:
            log.debug("tags of %s: %s", description.get("ProcessingJobName"), aws.reason(exc))
            tags = []
    return {t["Key"]: t["Value"] for t in tags}


class LogFollower:
    """New CloudWatch log events of a job's streams (``<job>/algo-N-...``), oldest first."""

    def __init__(self, job_name: str, region: str | None = None) -> None:
        self.job_name = job_name
        self.logs = aws.client("logs", region)
        self._tokens: dict[str, str | None] = {}

    def poll(self) -> list[str]:
        try:
            streams = self._streams()
        except Exception as exc:
            if aws.error_code(exc) != "ResourceNotFoundException":
                log.debug("log streams of %s: %s", self.job_name, aws.reason(exc))
            return []
        lines: list[str] = []
        for stream in streams:
            events = self._new_events(stream)
            prefix = f"[{stream.split('/', 1)[-1]}] " if len(streams) > 1 else ""
            lines += [prefix + e["message"].rstrip("\n") for e in events]
        return lines

    def _streams(self) -> list[str]:
        names: list[str] = []
        paginator = self.logs.get_paginator("describe_log_streams")
        for page in paginator.paginate(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.job_name}/"):
            names += [s["logStreamName"] for s in page.get("logStreams", [])]
        return sorted(names)

    def _new_events(self, stream: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        token = self._tokens.get(stream)
        while True:
            query: dict[str, Any] = {
                "logGroupName": LOG_GROUP,
                "logStreamName": stream,
                "startFromHead": True,
            }
            if token:
                query["nextToken"] = token
            try:
                page = self.logs.get_log_events(**query)
            except Exception as exc:
                log.debug("log events of %s: %s", stream, aws.reason(exc))
                break
            events += page.get("events", [])
            following = page.get("nextForwardToken")
            if not page.get("events") or following == token:
                token = following or token
                break
            token = following
        self._tokens[stream] = token
        return events


# ---------------------------------------------------------------------------------------------
# S3 trees


def upload_tree(s3: Any, source: Path, uri: str) -> int:
    """Every file under ``source`` (or the file itself) to the S3 prefix ``uri``; the count."""
    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/")
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        relative = path.name if path == source else path.relative_to(source).as_posix()
        s3.upload_file(str(path), bucket, f"{prefix}/{relative}" if prefix else relative)
    return len(files)


def download_tree(s3: Any, uri: str, destination: Path) -> int:
    """Every object under the S3 prefix ``uri`` into ``destination``, keeping paths; the count."""
    bucket, prefix = split_s3(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            relative = key[len(prefix) :]
            if not relative or key.endswith("/"):
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
            count += 1
    return count


# ---------------------------------------------------------------------------------------------
# Images: push the runner image to ECR (or any registry) for `batcat build --push`.


@dataclasses.dataclass
class PushResult:
    uri: str  # repository:tag, what --image takes
    digest: str | None  # sha256:... in the registry
    pushed: bool  # False when the registry already had that digest


def push_image(
    local_tag: str, repository_uri: str, *, ecr: bool | None = None, region: str | None = None
) -> PushResult:
    """Push a local image to ``repository_uri`` (``host/name[:tag]``), unless it is there already.

    For ECR (``ecr=None`` decides from the host) the repository is created when missing and
    the login comes from ``get_authorization_token``. The push is skipped when the registry's
    digest for the tag is one this image already has.
    """
    import base64

    from ..processing import docker_client

    engine = docker_client()
    try:
        image = engine.images.get(local_tag)
    except Exception as exc:
        if type(exc).__name__ == "ImageNotFound":
            raise UsageError(f"no local image {local_tag!r}; build it first (batcat build)") from None
        raise BackendError(f"cannot read local image {local_tag!r}: {exc}") from None
    repository, _, tag = (
        repository_uri.rpartition(":") if _has_tag(repository_uri) else (repository_uri, "", "")
    )
    tag = tag or (local_tag.rpartition(":")[2] if ":" in local_tag.rsplit("/", 1)[-1] else "latest")
    host, _, name = repository.partition("/")
    use_ecr = bool(ECR_IMAGE.fullmatch(f"{repository}:{tag}")) if ecr is None else ecr
    auth = None
    if use_ecr:
        client = aws.client("ecr", region)
        try:
            client.create_repository(repositoryName=name, imageScanningConfiguration={"scanOnPush": False})
            log.info("created ECR repository %s", name)
        except Exception as exc:
            if aws.error_code(exc) != "RepositoryAlreadyExistsException":
                raise aws.translate(exc, f"creating ECR repository {name}") from None
        try:
            data = client.get_authorization_token()["authorizationData"][0]
        except Exception as exc:
            raise aws.translate(exc, "logging in to ECR") from None
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        auth = {"username": user, "password": password}
    target = f"{repository}:{tag}"
    remote = _remote_digest(engine, target, auth)
    local = {
        d.partition("@")[2] for d in image.attrs.get("RepoDigests", []) if d.partition("@")[0] == repository
    }
    if remote and remote in local:
        log.info("%s already has %s; not pushed", target, remote)
        return PushResult(target, remote, pushed=False)
    image.tag(repository, tag)
    digest = None
    for line in engine.api.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
        if "error" in line:
            raise BackendError(f"pushing {target} failed: {line['error']}")
        digest = line.get("aux", {}).get("Digest", digest)
    log.info("pushed %s (%s) to %s", local_tag, digest, host)
    return PushResult(target, digest, pushed=True)


def ecr_repository_uri(name: str = "batcat-runner", region: str | None = None) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com/<name>`` for these credentials (one STS call)."""
    where = aws.resolve_region(region)
    try:
        account = aws.client("sts", where).get_caller_identity()["Account"]
    except Exception as exc:
        raise aws.translate(exc, "finding the AWS account for the ECR repository") from None
    return f"{account}.dkr.ecr.{where}.amazonaws.com/{name}"


def _has_tag(uri: str) -> bool:
    return ":" in uri.rsplit("/", 1)[-1]


def _remote_digest(engine: Any, target: str, auth: dict[str, str] | None) -> str | None:
    try:
        found = engine.api.inspect_distribution(target, auth_config=auth)
    except Exception as exc:  # not there (or not readable): push
        log.debug("registry digest of %s: %s", target, exc)
        return None
    digest = found.get("Descriptor", {}).get("digest")
    return str(digest) if digest else None
