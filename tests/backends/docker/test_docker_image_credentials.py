"""A package index that needs a token: the runner image builds, and no layer or history holds it.

The index is real (an HTTP server on 127.0.0.1 that demands basic authentication) and so is the
build (dockerd, the local base image). The image is then read the way anyone who pulls it
could: ``docker history --no-trunc``, ``docker image inspect`` and every byte of ``docker save``.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import subprocess
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = pytest.mark.docker

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
    """A simple-API package index on 127.0.0.1 that answers only with ``user:token``."""

    def __init__(self, root: Path, token: str) -> None:
        self.token = token
        wheel = make_wheel(root)
        expected = "Basic " + base64.b64encode(f"user:{token}".encode()).decode()
        page = f'<a href="/files/{WHEEL}">{WHEEL}</a>'.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="index"')
                    self.end_headers()
                    return
                if self.path.rstrip("/") == f"/simple/{PACKAGE}":
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
        self.url = f"http://user:{token}@127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    served = Index(tmp_path, f"tok{uuid.uuid4().hex}")
    yield served
    served.server.shutdown()


def assert_image_holds_no(token: str, tag: str, tmp_path: Path) -> None:
    history = subprocess.run(
        ["docker", "history", "--no-trunc", tag], capture_output=True, text=True, check=True
    )
    assert token not in history.stdout
    inspect = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, text=True, check=True)
    assert token not in inspect.stdout
    archive = tmp_path / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), tag], check=True)
    assert token.encode() not in archive.read_bytes()  # layers are uncompressed tars
    archive.unlink()


@pytest.mark.parametrize(
    ("line", "wheelhouse"),
    [
        ("--index-url {url}/simple/\nbatcat-probe==1.0", False),  # asked to build online, too
        ("batcat-probe @ {url}/files/" + WHEEL, None),
    ],
    ids=["index-url-line", "direct-url"],
)
def test_index_token_reaches_no_layer_and_no_history(
    runner, engine, index, tmp_path, monkeypatch, line, wheelhouse
):
    from batcat_nb.backends.docker import image as images

    monkeypatch.setenv("PIP_INDEX_URL", f"{index.url}/simple/")  # as CodeArtifact sets it
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(line.format(url=index.url) + "\n")

    built = images.ensure_image(
        engine,
        base_image=runner.image.base_image,
        requirements=requirements,
        wheelhouse=wheelhouse,
        rebuild=True,
    )

    probe = engine.containers.run(
        built.tag,
        ["-c", "import batcat_probe; print(batcat_probe.VALUE)"],
        entrypoint=["python"],
        remove=True,
    )
    assert probe.strip() == b"42"  # the package came from the index that needs the token
    assert_image_holds_no(index.token, built.tag, tmp_path)


def test_credential_line_that_names_no_package_is_refused_in_one_line(runner, engine, index, tmp_path):
    from batcat_nb.backends.docker import image as images
    from batcat_nb.errors import UsageError

    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{index.url}/files/{WHEEL}\n")

    with pytest.raises(
        UsageError, match="carries a credential and names no package; write it as NAME @ URL"
    ) as error:
        images.ensure_image(engine, base_image=runner.image.base_image, requirements=requirements)
    assert index.token not in str(error.value)
