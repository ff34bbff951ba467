"""The agent serves only its own user: private directory, peer uid, bounded messages, timeouts.

Real agents, real Unix sockets, real processes of another uid; impostors are small servers the
tests start themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BATCAT, run_batcat, write_notebook

from batcat_nb.backends.local import agent
from batcat_nb.backends.local.agent_guard import MAX_MESSAGE

pytestmark = pytest.mark.slow

NOBODY = 65534
# A planted server: answers every ping with the pid it is given ("self": its own), or never.
IMPOSTOR = """
import json, os, socket, sys
path, claim = sys.argv[1], sys.argv[2]
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen(8)
print("ready", flush=True)
held = []
while True:
    connection, _ = server.accept()
    if claim == "never":
        held.append(connection)
        continue
    connection.recv(1000)
    pid = os.getpid() if claim == "self" else int(claim)
    connection.sendall(json.dumps({"pid": pid, "idle": 0}).encode() + b"\\n")
    connection.close()
"""


@pytest.fixture
def agents_dir(monkeypatch) -> Iterator[Path]:
    """A private agent directory of this test (0700), for this process and the batcat it runs."""
    directory = Path(tempfile.mkdtemp(prefix="batcat-agents-"))
    monkeypatch.setenv("BATCAT_AGENT_DIR", str(directory))
    yield directory
    directory.chmod(0o700)
    agent.stop_agents()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def impostor(agents_dir) -> Iterator:
    started: list[subprocess.Popen] = []

    def start(path: Path, claim: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", IMPOSTOR, str(path), claim], stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def ask(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(str(path))
        try:
            connection.sendall(payload)
            connection.shutdown(socket.SHUT_WR)
            return connection.makefile("rb").read()
        except (BrokenPipeError, ConnectionResetError):  # closed unanswered
            return b""


@pytest.mark.parametrize("problem", ["open", "foreign"])
def test_an_agent_directory_others_can_use_is_refused_naming_the_fix(project, tmp_path, problem):
    directory = tmp_path / "shared"
    directory.mkdir()
    if problem == "open":
        directory.chmod(0o1777)  # as /tmp, or a shared XDG_CACHE_HOME
    else:
        directory.chmod(0o700)
        os.chown(directory, NOBODY, NOBODY)
    notebook = write_notebook(project / "nb.ipynb", None, "print(1)")

    done = run_batcat("run", str(notebook), env={**os.environ, "BATCAT_AGENT_DIR": str(directory)})

    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(directory) in line
    assert f"chmod 700 {directory}" in line if problem == "open" else "BATCAT_AGENT_DIR" in line
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("claim", ["victim", "self"])
def test_agent_stop_signals_no_process_named_by_a_planted_socket(agents_dir, impostor, claim):
    victim = subprocess.Popen(["sleep", "600"])
    try:
        planted = impostor(
            agents_dir / "aaaaaaaaaaaa-bbbbbbbbbbbb.sock", str(victim.pid) if claim == "victim" else "self"
        )

        done = run_batcat("agent", "stop")

        assert done.returncode == 0, done.stderr
        assert victim.poll() is None and planted.poll() is None
        assert "stopped 0 agent(s)" in done.stdout
    finally:
        victim.kill()
        victim.wait()


def test_a_socket_that_never_answers_fails_the_run_in_time_naming_it(project, agents_dir, impostor):
    env = {**os.environ, "BATCAT_AGENT_TIMEOUT": "1"}
    interpreter = Path(BATCAT).read_text().splitlines()[0].removeprefix("#!")
    found = subprocess.run(
        [interpreter, "-c", "from batcat_nb.backends.local.agent import socket_path; print(socket_path())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    path = Path(found.stdout.strip())
    impostor(path, "never")
    notebook = write_notebook(project / "nb.ipynb", None, "print(1)")

    done = run_batcat("run", str(notebook), env=env, timeout=120)
    status = run_batcat("agent", "status", env=env, timeout=60)

    assert done.returncode == 2, done.stderr
    assert f"the batcat agent at {path} did not answer within 1s" in done.stderr.strip().splitlines()[-1]
    assert status.returncode == 0 and "no agent is running" in status.stdout


def test_the_agent_answers_only_its_own_user_and_bounded_messages(agents_dir):
    pid = agent.call("ping")["pid"]  # starts a real agent
    path = agent.socket_path()
    agents_dir.chmod(0o711)  # a mistake that lets others reach the socket
    path.chmod(0o777)
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "try:\n"
        '    s.sendall(b\'{"op": "ping"}\\n\')\n'
        "    print(repr(s.makefile('rb').read()))\n"
        "except (BrokenPipeError, ConnectionResetError):\n"
        "    print(repr(b''))  # closed unanswered"
    )

    as_nobody = subprocess.run(
        ["/usr/bin/python3", "-c", probe, str(path)],
        user=NOBODY,
        group=NOBODY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    oversized = ask(path, b'{"op": "ping", "pad": "' + b"x" * MAX_MESSAGE + b'"}\n')  # valid, too long
    mine = json.loads(ask(path, b'{"op": "ping"}\n'))

    assert as_nobody.returncode == 0, as_nobody.stderr
    assert as_nobody.stdout.strip() == "b''"  # connected, but nothing answered
    assert oversized == b""
    assert mine["pid"] == pid  # still serving its user
