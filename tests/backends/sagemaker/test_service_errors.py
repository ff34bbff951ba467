"""AWS failing on its side (5xx, throttling after botocore's retries) is not the user's mistake:
``batcat`` exits 1 with a "try again" hint, not 2."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from collections.abc import Iterator

import pytest
from conftest import BATCAT


class _Unavailable(http.server.BaseHTTPRequestHandler):
    """An AWS endpoint that answers every request 503 ServiceUnavailable, as AWS does when down."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"__type": "ServiceUnavailable", "message": "Service is unavailable"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def unavailable_aws() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_aws_failing_on_its_side_exits_1_with_a_try_again_hint(unavailable_aws, tmp_path):
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": unavailable_aws,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.pop("AWS_PROFILE", None)
    done = subprocess.run(
        [BATCAT, "list", "--region", "us-east-1"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and lines[0].startswith("batcat: error: listing processing jobs")
    assert "ServiceUnavailable" in lines[0] and "try again" in lines[0]
