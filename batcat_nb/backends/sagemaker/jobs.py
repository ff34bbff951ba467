"""SageMaker Processing jobs by name, through boto3: describe, stop, list, their outputs, tags
and CloudWatch logs. What the backend follows a job with, and what `batcat status/logs/stop/
list/download` use."""

from __future__ import annotations

import logging
from typing import Any

from ...errors import BatcatError, ServiceError, UsageError
from ...manifest import FAILED, FINISHED, KILLED, RUNNING
from . import aws

log = logging.getLogger("batcat_nb")

LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
TERMINAL = frozenset({"Completed", "Failed", "Stopped"})
STATUS = {
    "InProgress": RUNNING,
    "Stopping": RUNNING,
    "Completed": FINISHED,
    "Failed": FAILED,
    "Stopped": KILLED,
}


def tracking_uri(tags: dict[str, str]) -> str:
    """The store of a job's run. The tag holds its URI without credentials: when this user's
    own ``MLFLOW_TRACKING_URI`` is that URI with credentials, it is used; otherwise MLflow's
    ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (or token) supply them."""
    from ...contract import JOB_TAG_TRACKING_URI
    from ...redact import without_credentials
    from ...tracking import default_tracking_uri

    stored, own = tags.get(JOB_TAG_TRACKING_URI), default_tracking_uri()
    return own if not stored or without_credentials(own) == stored else stored


def console_url(region: str, job_name: str) -> str:
    return (
        f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/processing-jobs/{job_name}"
    )


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


class NotCreated(ServiceError):
    """CreateProcessingJob failed on AWS's side and no job of that name exists: submitting it
    again cannot make a second job."""


def create_job(request: dict[str, Any], region: str) -> str:
    """Create the processing job (botocore retries the call itself) and return its ARN.

    A failed call may still have created the job: a 500 can come after SageMaker acted, and
    botocore's retry of it is then refused as a name in use. So after any failure the job is
    looked up, and a job found is the one: never a second. NotCreated: AWS failed, no job exists.
    """
    name = request["ProcessingJobName"]
    try:
        return str(aws.client("sagemaker", region).create_processing_job(**request)["ProcessingJobArn"])
    except Exception as exc:
        failure = exc
    try:
        arn = describe_job(name, region)["ProcessingJobArn"]
    except UsageError:  # no such job: the failure is the answer
        error = aws.translate(failure, f"creating {name}")
        raise (NotCreated(str(error)) if isinstance(error, ServiceError) else error) from None
    except BatcatError:  # cannot tell: submitting it again might make a second job
        raise aws.translate(failure, f"creating {name} (it may exist: see `batcat status {name}`)") from None
    log.info("%s: %s, yet the job was created; following it", name, aws.reason(failure))
    return str(arn)


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
