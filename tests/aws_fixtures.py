"""AWS for the tests, with no AWS: a moto server on 127.0.0.1 that also *runs* processing jobs.

moto records a CreateProcessingJob and reports it Completed at once, without running it.
``FakeSageMaker`` hooks moto's own request handlers (the server runs in this process, a
``ThreadedMotoServer``): when a job is created it takes the exact request as it arrived on the
wire, sets the job InProgress, and executes the request the way SageMaker would (inputs from
moto's S3 into ``/opt/ml/processing/input``, the image's worker, outputs back to moto's S3),
through the Docker backend's contract implementation (``batcat_nb.backends.docker.container.run_request``) or,
for the tests that must not need Docker, the same worker in a subprocess over a local copy of
``/opt/ml``. The container's lines go to moto's CloudWatch Logs as they come; at the end the job
moves to Completed, Failed (with FailureReason and ExitMessage) or Stopped.

Every client points at the moto server: dummy credentials, ``AWS_ENDPOINT_URL``,
``AWS_EC2_METADATA_DISABLED=true`` and empty AWS config files, so nothing reaches a real host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from batcat_nb.contract import ProcessingOutcome
from batcat_nb.storage import download, upload

__all__ = [
    "REGION",
    "ROLE",
    "RUNNER_URI",
    "aws_env",
    "bucket",
    "ecr_image",
    "fake_sagemaker",
    "faulty_sagemaker",
    "local_registry",
    "moto_server",
    "options",
    "report_eventbridge_notifications",
    "s3_keys",
    "sagemaker_env",
]

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/batcat-tests"
RUNNER_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/batcat-runner:test"
CONTAINER_ML = "/opt/ml"

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server in this process on 127.0.0.1; every AWS client of the session uses it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
            patch.delenv(name, raising=False)
        for name, value in {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": url}.items():
            patch.setenv(name, value)
        yield url
    server.stop()


@pytest.fixture
def aws_env(moto_server: str) -> Iterator[str]:
    """A test using AWS: fresh batcat clients (they cache the environment they were built in)."""
    from batcat_nb.backends.sagemaker import aws as batcat_aws
    from batcat_nb.backends.sagemaker import backend as sagemaker
    from batcat_nb.backends.sagemaker import registry as image_registry

    batcat_aws.reset()
    sagemaker._checked_buckets.clear()
    image_registry._checked_images.clear()
    yield moto_server
    batcat_aws.reset()


@pytest.fixture
def bucket(aws_env: str) -> str:
    """A new, empty bucket."""
    import boto3

    name = f"batcat-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def ecr_image(aws_env: str) -> str:
    """The runner image as moto's ECR knows it (the subprocess runner does not pull it)."""
    import boto3

    ecr = boto3.client("ecr")
    with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName="batcat-runner")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
    with contextlib.suppress(ecr.exceptions.ImageAlreadyExistsException):
        ecr.put_image(repositoryName="batcat-runner", imageManifest=json.dumps(manifest), imageTag="test")
    return RUNNER_URI


@pytest.fixture
def options(bucket: str, ecr_image: str) -> dict[str, Any]:
    return {
        "role": ROLE,
        "s3_prefix": f"s3://{bucket}/jobs",
        "image": ecr_image,
        "instance_type": "ml.t3.medium",
    }


@pytest.fixture
def sagemaker_env(options: dict[str, Any], fake_sagemaker: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`-b sagemaker` works with no more options: they come from BATCAT_SAGEMAKER_*. Jobs run in the
    subprocess runner: the magics tests that use it are about the magics' logic (states, waiting,
    status/logs/stop), not the container; the container is tested in test_sagemaker_docker.py."""
    for name, value in options.items():
        monkeypatch.setenv(f"BATCAT_SAGEMAKER_{name.upper()}", value)
    monkeypatch.setenv("BATCAT_SAGEMAKER_POLL_INTERVAL", "0.3")
    return fake_sagemaker


def s3_keys(bucket: str, prefix: str = "") -> list[str]:
    import boto3

    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def ecr_repository(name: str) -> str:
    """Create an ECR repository in moto; return its URI (a name only: nothing is pulled from it)."""
    import boto3

    found = boto3.client("ecr").create_repository(repositoryName=name)
    return str(found["repository"]["repositoryUri"])


def report_eventbridge_notifications(setattr: Callable[[Any, str, Any], None]) -> None:
    """moto stores a bucket's EventBridgeConfiguration but leaves it out of
    GetBucketNotificationConfiguration; S3 returns it (an empty element). Make moto answer as S3
    does (``setattr``: ``monkeypatch.setattr``, or the builtin in a benchmark)."""
    from moto.core.responses import ActionResult
    from moto.s3.responses import S3Response

    original = S3Response.get_bucket_notification

    def get_bucket_notification(self: Any) -> Any:
        found = self.backend.get_bucket_notification_configuration(self.bucket_name)
        serialized = self.serialized

        def with_eventbridge(result: Any) -> Any:
            if found is not None and found.event_bridge is not None and isinstance(result, ActionResult):
                result._result["EventBridgeConfiguration"] = {}
            return serialized(result)

        self.serialized = with_eventbridge
        try:
            return original(self)
        finally:
            del self.serialized

    setattr(S3Response, "get_bucket_notification", get_bucket_notification)


# ---------------------------------------------------------------------------------------------
# Running the jobs moto records


Runner = Callable[..., Any]  # (request, *, on_log, stop) -> outcome


def docker_runner() -> Runner:
    """The strict emulation: the request run in its image as the platform runs it (platform-owned
    folders, the image's user, the request's network, entrypoint and environment)."""
    from batcat_nb.backends.docker.container import run_request

    def run(request: dict[str, Any], *, on_log: Callable[[str], None], stop: threading.Event) -> Any:
        return run_request(request, on_log=on_log, stop=stop, stop_grace=10.0)

    return run


def subprocess_runner(
    request: dict[str, Any], *, on_log: Callable[[str], None], stop: threading.Event
) -> ProcessingOutcome:
    """The request's worker in a subprocess over a local ``/opt/ml``: for tests about the launcher's
    logic only (states, polling, logs, stops), which say so; end-to-end tests use ``in_runner_image``.

    Inputs are downloaded from S3 into their channels, processingjobconfig.json and
    resourceconfig.json are written, the Environment is the request's, the first KB of
    ``output/message`` becomes the ExitMessage and the output channels are uploaded at the end.
    """
    import boto3

    s3 = boto3.client("s3")
    root = Path(tempfile.mkdtemp(prefix="fake-sagemaker-"))
    try:
        for channel in request.get("ProcessingInputs", []):
            source = channel["S3Input"]
            _local(root, source["LocalPath"]).mkdir(parents=True, exist_ok=True)
            download(source["S3Uri"], _local(root, source["LocalPath"]), s3)
        outputs = request["ProcessingOutputConfig"]["Outputs"]
        for channel in outputs:
            _local(root, channel["S3Output"]["LocalPath"]).mkdir(parents=True, exist_ok=True)
        config = root / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "processingjobconfig.json").write_text(json.dumps(request, default=str))
        (config / "resourceconfig.json").write_text(
            json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
        )
        platform = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")
        platform += ("AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_EC2_METADATA_DISABLED")
        host = {
            k: os.environ[k]
            for k in ("PATH", "LANG", "MLFLOW_DISABLE_TELEMETRY", "PYTHONPATH", *platform)
            if k in os.environ
        }  # PYTHONPATH: the code under test; AWS_*: what the platform gives a job (its role, its region)
        image = {"PYTHONUNBUFFERED": "1"}  # as docker/Dockerfile sets it: log lines leave at once
        env = {
            **host,
            **image,
            "HOME": str(root),
            **request.get("Environment", {}),
            "BATCAT_ML_ROOT": str(root),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "batcat_nb.worker"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=_stop_on, args=(stop, process), daemon=True).start()
        assert process.stdout is not None
        for line in process.stdout:
            on_log(line.rstrip("\n"))
        code = process.wait()
        for channel in outputs:
            upload(_local(root, channel["S3Output"]["LocalPath"]), channel["S3Output"]["S3Uri"], s3)
        message_file = root / "output" / "message"
        message = message_file.read_bytes()[:1024].decode(errors="ignore") if message_file.exists() else ""
        if stop.is_set():
            return ProcessingOutcome(code, "Stopped", exit_message=message)
        if code == 0:
            return ProcessingOutcome(0, "Completed")
        return ProcessingOutcome(code, "Failed", "AlgorithmError: See job logs for more information", message)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _stop_on(stop: threading.Event, process: subprocess.Popen[str]) -> None:
    while process.poll() is None:
        if stop.wait(0.2):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            return


def _local(root: Path, container_path: str) -> Path:
    return root / Path(container_path).relative_to(CONTAINER_ML)


class FakeSageMaker:
    """Moto's SageMaker, made to run the processing jobs it records."""

    def __init__(self, runner: Runner | None) -> None:
        self.runner = runner  # None: jobs stay InProgress until finish() (stop tests)
        self.requests: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, Any] = {}
        self._stops: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}

    # hooks, called by moto's handlers in the server's request thread
    def created(self, request: dict[str, Any]) -> None:
        name = request["ProcessingJobName"]
        job = self._job(name)
        job.processing_job_status = "InProgress"
        job.processing_end_time = None
        job.environment = request.get("Environment") or None  # moto drops these two
        job.processing_resources = request.get("ProcessingResources")
        self.requests[name] = request
        self._stops[name] = threading.Event()
        if self.runner is not None:
            thread = threading.Thread(target=self._run, args=(name, request), daemon=True)
            self._threads[name] = thread
            thread.start()

    def stopping(self, name: str) -> None:
        job = self._job(name)
        if job.processing_job_status != "InProgress":
            return
        job.processing_job_status = "Stopping"
        self._stops[name].set()
        if name not in self._threads:
            self.finish(name, ProcessingOutcome(143, "Stopped"))

    def _run(self, name: str, request: dict[str, Any]) -> None:
        logs = LogWriter(name)
        try:
            assert self.runner is not None
            outcome = self.runner(request, on_log=logs.write, stop=self._stops[name])
        except Exception as exc:  # the fake itself broke: say so in the job, as SageMaker would
            outcome = ProcessingOutcome(1, "Failed", f"InternalServerError: {type(exc).__name__}: {exc}")
        self.finish(name, outcome)

    def finish(self, name: str, outcome: Any) -> None:
        """End the job as SageMaker would report it."""
        job = self._job(name)
        job.processing_job_status = outcome.status
        if outcome.status == "Failed":
            job.failure_reason = outcome.failure_reason or "AlgorithmError: See job logs for more information"
        if outcome.exit_message:
            job.exit_message = outcome.exit_message
        job.processing_end_time = job.last_modified_time = datetime.now(timezone.utc)
        self.outcomes[name] = outcome

    def wait_all(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    @staticmethod
    def _job(name: str) -> Any:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[DEFAULT_ACCOUNT_ID][REGION].processing_jobs[name]


class LogWriter:
    """A job's lines into moto's CloudWatch Logs, where SageMaker puts them."""

    GROUP = "/aws/sagemaker/ProcessingJobs"

    def __init__(self, job_name: str) -> None:
        import boto3

        self.logs = boto3.client("logs")
        self.stream = f"{job_name}/algo-1-{int(time.time())}"
        with contextlib.suppress(self.logs.exceptions.ResourceAlreadyExistsException):
            self.logs.create_log_group(logGroupName=self.GROUP)
        self.logs.create_log_stream(logGroupName=self.GROUP, logStreamName=self.stream)

    def write(self, line: str) -> None:
        if not line:
            return  # CloudWatch takes no empty events
        event = {"timestamp": int(time.time() * 1000), "message": line}
        self.logs.put_log_events(logGroupName=self.GROUP, logStreamName=self.stream, logEvents=[event])


@pytest.fixture
def fake_sagemaker(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSageMaker]:
    """Processing jobs created during the test run through the worker (in a subprocess)."""
    from moto.sagemaker.responses import SageMakerResponse

    fake = FakeSageMaker(subprocess_runner)
    create, stop = SageMakerResponse.create_processing_job, SageMakerResponse.stop_processing_job

    def create_processing_job(self: Any) -> Any:
        from moto.sagemaker.exceptions import ResourceInUseException

        request = json.loads(self.body)
        name = request["ProcessingJobName"]
        if name in fake.requests:  # SageMaker refuses a name twice; moto would overwrite the job
            raise ResourceInUseException(message=f"a processing job named {name} already exists")
        answer = create(self)
        fake.created(request)
        return answer

    def stop_processing_job(self: Any) -> Any:
        from moto.sagemaker.exceptions import ValidationError

        name = json.loads(self.body)["ProcessingJobName"]
        try:
            status = fake._job(name).processing_job_status
        except KeyError:
            return stop(self)  # moto's own "could not find" error
        if status not in ("InProgress", "Stopping"):
            raise ValidationError(message=f"The processing job {name} is not in progress ({status}).")
        answer = stop(self)  # moto marks it Stopped at once; SageMaker goes through Stopping
        fake._job(name).processing_job_status = status
        fake.stopping(name)
        return answer

    monkeypatch.setattr(SageMakerResponse, "create_processing_job", create_processing_job)
    monkeypatch.setattr(SageMakerResponse, "stop_processing_job", stop_processing_job)
    yield fake
    for event in fake._stops.values():
        event.set()
    fake.wait_all(60)


# ---------------------------------------------------------------------------------------------
# SageMaker failing on its side: what moto cannot produce on demand


@dataclasses.dataclass
class _Fault:
    times: int
    code: str
    status: int
    after_forwarding: bool  # the call still reaches moto: AWS acted, then answered the error


class FaultySageMaker:
    """A loopback HTTP proxy in front of moto for the SageMaker API that answers chosen calls
    with a server error (500 InternalServerError unless told), as AWS does now and then: real
    HTTP, botocore's own retries."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.calls: list[str] = []  # every operation, in order
        self.failed: list[str] = []  # the operations answered with an error
        self._faults: dict[str, _Fault] = {}
        self._lock = threading.Lock()

    def fail(
        self,
        operation: str,
        times: int,
        *,
        error: tuple[str, int] = ("InternalServerError", 500),
        after_forwarding: bool = False,
    ) -> None:
        """Answer the next ``times`` calls of ``operation`` (CreateProcessingJob...) with ``error``."""
        self._faults[operation] = _Fault(times, *error, after_forwarding)

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        operation = headers.get("X-Amz-Target", "").rpartition(".")[2]
        with self._lock:
            self.calls.append(operation)
            fault = self._faults.get(operation)
            if fault is not None and fault.times > 0:
                fault.times -= 1
                self.failed.append(operation)
            else:
                fault = None
        if fault is None or fault.after_forwarding:
            answer = self._forward(path, headers, body)
        if fault is None:
            return answer
        return fault.status, json.dumps({"__type": fault.code, "message": f"{fault.code} (test)"}).encode()

    def _forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@pytest.fixture
def faulty_sagemaker(
    fake_sagemaker: FakeSageMaker, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultySageMaker]:
    """SageMaker calls (only they) go through a ``FaultySageMaker``; botocore tries each call
    twice, so a test needs few failures to exhaust its retries."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from batcat_nb.backends.sagemaker import aws as batcat_aws

    proxy = FaultySageMaker(os.environ["AWS_ENDPOINT_URL"])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, answer = proxy.answer(self.path, dict(self.headers), body)
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    batcat_aws.reset()
    yield proxy
    server.shutdown()
    server.server_close()
    batcat_aws.reset()


# ---------------------------------------------------------------------------------------------
# A real registry on 127.0.0.1 (Debian's docker-registry), for pushes


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a registry: $BATCAT_TEST_REGISTRY, else one started here."""
    from conftest import require, wait_until_up

    given = os.environ.get("BATCAT_TEST_REGISTRY")
    if given:
        yield given
        return
    binary = shutil.which("docker-registry")
    require(binary is not None, "Debian's docker-registry package (scripts/provision_registry.sh)")
    assert binary is not None
    root = tmp_path_factory.mktemp("registry")
    address = f"127.0.0.1:{free_port()}"
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n"
    )
    with open(root / "registry.log", "wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT
        )
        wait_until_up(f"http://{address}/v2/", process, root / "registry.log", timeout=30)
        yield address
        process.terminate()
        process.wait(10)
