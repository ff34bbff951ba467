"""The SageMaker backend: a notebook job as a SageMaker Processing job, S3 in and out.

``submit`` stages the notebook, ``--include`` files and ``job.json`` under
``<s3-prefix>/<job>/input/``; once the MLflow run exists the processing job is created (its
request built by ``batcat_nb.contract.build_request``, the one the Docker backend runs too,
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
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ...config import parse_pairs
from ...contract import check_request, code_files, include_paths, on_loopback, request_tags
from ...errors import BackendError, BatcatError, ServiceError, UsageError
from ...layout import CODE_CHANNEL, JOB_CHANNEL, NOTEBOOK_CHANNEL
from ...manifest import FAILED, KILLED, RUNNING
from ...redact import without_credentials
from ...spec import JobSpec
from ...storage import download, is_s3, split_s3, upload
from ...tracking import TAG_IMAGE, TAG_IMAGE_DIGEST
from ..base import JobHandle, RerunImage
from . import aws
from .jobs import (
    STATUS,
    TERMINAL,
    LogFollower,
    NotCreated,
    console_url,
    create_job,
    describe_job,
    stop_job,
)
from .registry import check_image, pinned

log = logging.getLogger("batcat_nb")

STUDIO_METADATA = Path("/opt/ml/metadata/resource-metadata.json")
STOPPED_BY_USER = "stopped (StopProcessingJob)"

# MLflow tags of a SageMaker run (the job name is also batcat.job_name).
TAG_JOB_ARN = "batcat.sagemaker.job_arn"
TAG_REGION = "batcat.sagemaker.region"
TAG_CONSOLE = "batcat.sagemaker.console"
TAG_FAILURE_REASON = "batcat.sagemaker.failure_reason"
TAG_EXIT_MESSAGE = "batcat.sagemaker.exit_message"


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
    network_isolation: bool = False  # EnableNetworkIsolation: the container has no network at all
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
    image_digest: str | None = None  # sha256:... as the registry answered, when it was asked

    def job_uri(self, job_name: str, *parts: str) -> str:
        key = "/".join(filter(None, [self.prefix, job_name, *parts]))
        return f"s3://{self.bucket}/{key}/"


class SageMakerBackend:
    """Runs jobs as SageMaker Processing jobs."""

    name = "sagemaker"
    detachable = True  # the job runs in AWS whether or not this process waits
    secret_sources = ("ssm", "secretsmanager")  # read inside the job with its role

    def __init__(self) -> None:
        self._resolved: dict[str, _Resolved] = {}

    def validate(self, spec: JobSpec) -> None:
        """Credentials, region, role, bucket, image, request: all before anything is uploaded."""
        self._resolve(spec)
        if not _tracking_reachable(spec.tracking_uri):
            log.warning(
                "a job on SageMaker cannot reach this tracking store (a sqlite: file or a server on "
                "this machine's loopback): it gets no MLFLOW_* variables, and its run will be "
                "completed from the job's manifest when batcat fetches its outputs"
            )

    @staticmethod
    def rerun_image(request: RerunImage) -> tuple[dict[str, Any], dict[str, str]]:
        """The image a run's job ran in, by digest when its registry gave one (a tag can move):
        what ``batcat rerun`` runs it in again."""
        if request.environment is not None:
            raise UsageError(
                "SageMaker runs a pushed image: build one from the environment with --backend docker, "
                "or push one (`batcat build --push`) and pass --image URI"
            )
        image, digest = request.tags.get(TAG_IMAGE), request.tags.get(TAG_IMAGE_DIGEST)
        if not image:
            return request.options, {}
        return {**request.options, "image": pinned(image, digest) if digest else image}, {}

    def submit(self, spec: JobSpec) -> SageMakerHandle:
        resolved = self._resolved.pop(spec.job_name, None) or self._resolve(spec)
        return SageMakerHandle(spec, resolved)

    def _resolve(self, spec: JobSpec) -> _Resolved:
        from ...config import resolve

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
        bucket, prefix = checked_s3_prefix(s3_prefix, "the job's files")
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
            env=parse_pairs(config.env, "--env"),
            include=include_paths(config.include or []),
        )
        for destination in spec.outputs.values():
            if is_s3(destination):
                split_s3(destination)
        check_request(_request(spec, resolved, _draft_tracking_env(spec)))
        check_bucket(bucket, region)
        if config.check_image:
            resolved.image_digest = check_image(resolved.image, region)
        if config.instance_count > 1:
            log.warning(
                "%d instances each run the whole notebook; their outputs share one S3 prefix",
                config.instance_count,
            )
        self._resolved[spec.job_name] = resolved
        return resolved


def checked_s3_prefix(s3_prefix: str | None, what: str) -> tuple[str, str]:
    """``--s3-prefix`` as (bucket, prefix), or one line saying how to give it."""
    if not s3_prefix:
        raise UsageError(
            f"no S3 location for {what}; pass --s3-prefix s3://BUCKET/PREFIX "
            "(or set BATCAT_SAGEMAKER_S3_PREFIX, or s3_prefix = ... in [tool.batcat.sagemaker])"
        )
    if not is_s3(s3_prefix):
        raise UsageError(f"--s3-prefix {s3_prefix!r} is not an S3 URI; write s3://BUCKET/PREFIX")
    return split_s3(s3_prefix)


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


def _tracking_reachable(uri: str) -> bool:
    """Can a job on AWS log to this store itself? A server it can route to, or a SageMaker managed
    MLflow; never a ``sqlite:`` file or a server on this machine's loopback, nor a URI holding a
    credential, which the job's environment would show in its description: then the launcher
    completes the run from the manifest instead."""
    if uri.startswith("arn:"):
        return True
    if not uri.startswith(("http://", "https://")):
        return False
    return not on_loopback(uri) and without_credentials(uri) == uri


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
    from ...contract import build_request

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
        tags=request_tags(spec),
        network_isolation=config.network_isolation,
    )
    if config.subnets:
        request.setdefault("NetworkConfig", {})["VpcConfig"] = {
            "Subnets": list(config.subnets),
            "SecurityGroupIds": list(config.security_groups or []),
        }
    if config.kms_key:
        request["ProcessingOutputConfig"]["KmsKeyId"] = config.kms_key
        request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] = config.kms_key
    return request


class SageMakerHandle(JobHandle):
    """A job staged in S3; the processing job is created once its MLflow run exists."""

    def __init__(self, spec: JobSpec, resolved: _Resolved) -> None:
        super().__init__(spec)
        self.resolved = resolved
        self.region = resolved.region
        self.job_arn: str | None = None
        self.description: dict[str, Any] = {}
        self.output_dir = Path(spec.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._log_lines: list[str] = []
        self._echo = _echo_stderr if spec.log_output or spec.progress else None
        self._wake = threading.Event()
        self._stop_requested = False
        self._not_created = ""  # why CreateProcessingJob failed, when it is to be submitted again
        self._inputs, self._outputs = _channels(spec, resolved)
        self._stage()

    # -- submission -------------------------------------------------------------------------

    def _stage(self) -> None:
        """Upload the notebook, --include files, job.json and local inputs."""
        spec, resolved = self.spec, self.resolved
        s3 = aws.client("s3", self.region)
        uploads = code_files(Path(spec.notebook), resolved.include)
        key = resolved.config.kms_key  # --kms-key covers what is staged as well as the outputs
        encryption = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key} if key else {}
        try:
            code_bucket, code_key = split_s3(self._inputs[CODE_CHANNEL])
            for path, relative in uploads:
                s3.upload_file(str(path), code_bucket, code_key + relative, ExtraArgs=encryption or None)
            job_bucket, job_key = split_s3(self._inputs[JOB_CHANNEL])
            body = json.dumps(spec.worker_job(), indent=2).encode()
            s3.put_object(Bucket=job_bucket, Key=job_key + "job.json", Body=body, **encryption)
            for name, source in spec.inputs.items():
                if not is_s3(source):
                    # the user's own folder: its links are followed, as they chose them
                    upload(Path(source), self._inputs[name], s3, extra_args=encryption, links_out=True)
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
        from ...tracking import run_env

        tracking = {}
        if _tracking_reachable(self.tracker.uri):
            tracking = run_env(self.tracker.uri, self.spec.run_id, self.spec.experiment_id)
        request = _request(self.spec, self.resolved, tracking)
        try:
            check_request(request)
            self.job_arn = create_job(request, self.region)
        except Exception as exc:
            error = exc if isinstance(exc, BatcatError) else aws.translate(exc, f"creating {self.job_name}")
            if isinstance(error, NotCreated) and self.spec.retries:
                self._not_created = str(error)  # the job ends FAILED: api.wait submits it again
                return
            self.tracker.fail_run(self.spec.run_id, FAILED, str(error))
            raise error from None
        log.info("submitted %s (%s)", self.job_name, console_url(self.region, self.job_name))
        self._tag_run(
            {
                TAG_JOB_ARN: self.job_arn or "",
                TAG_REGION: self.region,
                TAG_IMAGE: self.resolved.image,
                **({TAG_IMAGE_DIGEST: self.resolved.image_digest} if self.resolved.image_digest else {}),
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

    def state(self) -> str:
        """SageMaker's own word for the job as ``wait()`` last saw it (InProgress, Stopping...)."""
        if self.job_arn is None:
            return "Staging"
        return str(self.description.get("ProcessingJobStatus", "Created"))

    def status(self) -> str:
        if self._result is not None:
            return self._result.status
        if self.job_arn is None:
            return KILLED if self._stop_requested else FAILED if self._not_created else RUNNING
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
            except (BackendError, ServiceError) as exc:
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
            download(self._outputs[NOTEBOOK_CHANNEL], self.output_dir, s3, folder=True)
            for name, destination in self.spec.outputs.items():
                if not is_s3(destination):
                    download(self._outputs[name], Path(destination), s3, folder=True)
        except Exception as exc:
            log.warning("could not fetch the outputs of %s: %s", self.job_name, aws.reason(exc))
        return self.output_dir

    def logs(self) -> str:
        if self.job_arn is not None and self._result is None:
            self._emit(self._follower().poll())
        return "".join(line + "\n" for line in self._log_lines)  # lines, as a local job's log file

    def _stop(self) -> None:
        self._stop_requested = True
        self._wake.set()
        if self.job_arn is None:
            return
        stop_job(self.job_name, self.region)

    def _exit_reason(self) -> str:
        if self._not_created:
            return self._not_created
        description = self.description
        parts = [description.get("FailureReason", ""), description.get("ExitMessage", "")]
        return "; ".join(dict.fromkeys(p.strip() for p in parts if p and p.strip()))


def _echo_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
