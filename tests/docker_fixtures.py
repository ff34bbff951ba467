"""A real Docker engine for the tests: the engine, the runner image (built once), the backend,
and a package index on 127.0.0.1 serving one package that no other index has.

The image is built with the example notebooks' requirements on ``$BATCAT_DOCKER_BASE_IMAGE``
(else python:3.11-slim or the local ``batcat-base:bookworm``); its content-addressed tag makes
every later session reuse it in about a second.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import subprocess
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import (
    RUNNER_URI,
    FakeSageMaker,
    aws_env,
    docker_runner,
    local_registry,
    moto_server,
)
from conftest import BATCAT, EXAMPLES, free_port, require

__all__ = [
    "aws_env",
    "engine",
    "in_runner_image",
    "index",
    "local_registry",
    "moto_server",
    "runner",
    "s3_bucket",
]

EXAMPLE_REQUIREMENTS = (
    "scikit-learn\npandas\nskops\n"  # notebooks/*.ipynb: imports, mlflow.sklearn (skinny lacks skops)
)


@dataclass
class Runner:
    """The session's runner image and what it was built from."""

    image: Any  # batcat_nb.backends.docker.image.RunnerImage
    requirements: Path

    def options(self, **extra: Any) -> dict[str, Any]:
        """Docker backend options that find this image without building."""
        return {"base_image": self.image.base_image, "requirements": str(self.requirements), **extra}


@pytest.fixture(scope="session")
def engine() -> Any:
    """A client of the local Docker engine (scripts/provision_docker.sh starts one)."""
    from batcat_nb.backends.docker.container import JOB_LABEL, docker_client
    from batcat_nb.errors import BackendError

    try:
        client = docker_client()
    except BackendError as exc:
        require(False, f"a Docker engine ({exc})")
    # An earlier session killed mid-test may have left its job's container behind: start clean,
    # so that each test's "no container is left" speaks of this session only.
    for stale in client.containers.list(all=True, filters={"label": JOB_LABEL, "status": "exited"}):
        stale.remove(force=True)
    return client


@pytest.fixture(scope="session")
def runner(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """The runner image with the examples' requirements, built once per environment."""
    from batcat_nb.backends.docker import image as images
    from batcat_nb.errors import UsageError

    requirements = EXAMPLES / "requirements.txt"
    if not requirements.exists():
        requirements = tmp_path_factory.mktemp("image") / "requirements.txt"
        requirements.write_text(EXAMPLE_REQUIREMENTS)
    try:
        base = images.resolve_base_image(engine, os.environ.get("BATCAT_DOCKER_BASE_IMAGE"))[0]
    except UsageError as exc:
        require(False, f"a base image ({exc})")
    image = images.ensure_image(engine, base_image=base, requirements=requirements)
    return Runner(image, requirements)


@pytest.fixture
def in_runner_image(
    fake_sagemaker: FakeSageMaker, runner: Runner, engine: Any, ecr_image: str
) -> FakeSageMaker:
    """SageMaker's jobs run in the runner image built from the current source, known locally by the
    URI the tests' ECR gives it, through the strict emulation (platform-owned folders, the image's
    user, the request's network, entrypoint and environment)."""
    repository, tag = RUNNER_URI.rsplit(":", 1)
    engine.images.get(runner.image.tag).tag(repository, tag)
    fake_sagemaker.runner = docker_runner()
    return fake_sagemaker


def job_containers(engine: Any) -> list[Any]:
    """Every container a batcat job started that still exists."""
    from batcat_nb.backends.docker.container import JOB_LABEL

    return list(engine.containers.list(all=True, filters={"label": JOB_LABEL}))


def run_batcat_build(*args: str, timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``batcat build ...`` as a user types it."""
    return subprocess.run([BATCAT, "build", *args], capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture
def s3_bucket(moto_server: str) -> Iterator[str]:
    """A fresh bucket on the session's moto server."""
    import uuid

    import boto3

    name = f"batcat-docker-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    yield name


PACKAGE = "batcat-probe"
WHEEL = "batcat_probe-1.0-py3-none-any.whl"


def make_wheel(directory: Path) -> Path:
    """A one-module wheel (``batcat_probe.VALUE == 42``), written by hand."""
    files = {
        "batcat_probe.py": b"VALUE = 42\n",
        "batcat_probe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: batcat-probe\nVersion: 1.0\n",
        "batcat_probe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files["batcat_probe-1.0.dist-info/RECORD"] = (
        "\n".join([*record, "batcat_probe-1.0.dist-info/RECORD,,"]) + "\n"
    ).encode()
    wheel = directory / WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


class Index:
    """A simple-API package index on 127.0.0.1 serving ``batcat-probe``; with a token, it answers
    only ``user:token`` (basic authentication), without one, anyone."""

    def __init__(self, root: Path, token: str | None) -> None:
        self.token = token
        wheel = make_wheel(root)
        expected = "Basic " + base64.b64encode(f"user:{token}".encode()).decode() if token else None
        page = f'<a href="/files/{WHEEL}">{WHEEL}</a>'.encode()
        listing = f'<a href="/simple/{PACKAGE}/">{PACKAGE}</a>'.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if expected and self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="index"')
                    self.end_headers()
                    return
                if self.path.rstrip("/") == "/simple":
                    body, kind = listing, "text/html"
                elif self.path.rstrip("/") == f"/simple/{PACKAGE}":
                    body, kind = page, "text/html"
                elif self.path == f"/files/{WHEEL}":
                    body, kind = wheel.read_bytes(), "application/octet-stream"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        credentials = f"user:{token}@" if token else ""
        self.url = f"http://{credentials}127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    """An index that needs a token (``index.url`` carries it)."""
    served = Index(tmp_path, f"tok{uuid.uuid4().hex}")
    yield served
    served.server.shutdown()
