"""Shared fixtures: a real kernel, a real SQLite MLflow store, the real ``batcat`` command."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

pytest_plugins = ["aws_fixtures", "docker_fixtures"]  # their fixtures serve every test

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "notebooks"
BATCAT = str(Path(sys.executable).parent / "batcat")

os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(available: bool, what: str) -> None:
    """Skip when a component is missing, except in CI where it must be there."""
    if available:
        return
    if in_ci():
        pytest.fail(f"{what} is missing; the test command must provide it in CI")
    pytest.skip(f"{what} is not available here")


@pytest.fixture(scope="session", autouse=True)
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' own agent directory; every agent started by a test is stopped at the end."""
    directory = tmp_path_factory.mktemp("agents")
    os.environ["BATCAT_AGENT_DIR"] = str(directory)
    yield directory
    subprocess.run([BATCAT, "agent", "stop"], check=False, capture_output=True)


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the session: its schema is built once."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def work_in(folder: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``folder`` as the working directory, its runs going to ``tracking_uri``, no BATCAT_ setting
    but the agents' folder inherited from the shell."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    for name in [n for n in os.environ if n.startswith("BATCAT_") and n != "BATCAT_AGENT_DIR"]:
        monkeypatch.delenv(name)
    return folder


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_uri: str) -> Path:
    """A fresh working directory whose runs go to the session's store."""
    return work_in(tmp_path, tracking_uri, monkeypatch)


@pytest.fixture
def experiment() -> str:
    """A unique experiment name, so tests can find their own runs."""
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def mlflow_client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


@pytest.fixture
def runs_of(mlflow_client: Any) -> Callable[[str], list[Any]]:
    """The MLflow runs of an experiment, newest first."""

    def find(name: str) -> list[Any]:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            return []
        return mlflow_client.search_runs([found.experiment_id], order_by=["start_time DESC"])

    return find


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Poll ``url`` until it answers; fail with the server's log if it dies or never answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"{url} did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 with one worker (DESIGN.md: quick to start)."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/health", process, root / "server.log")
        yield url
        process.terminate()
        process.wait(30)


def run_batcat(*args: str, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """The real ``batcat`` command, as a user would type it."""
    return subprocess.run([BATCAT, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def write_notebook(path: Path, parameters: str | None, *cells: str, kernel: str = "python3") -> Path:
    """A notebook with an optional ``parameters`` cell followed by code cells."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    if parameters is not None:
        cell = new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.extend(new_code_cell(source) for source in cells)
    nbformat.write(nb, str(path))
    return path


def output_notebook(stdout: str) -> Path:
    """The executed notebook's path, as the run summary prints it."""
    for line in stdout.splitlines():
        label, _, value = line.strip().partition(" ")
        if label == "notebook":
            return Path(value.strip())
    raise AssertionError(f"no notebook line in:\n{stdout}")


def error_outputs(notebook: Path) -> list[Any]:
    nb = nbformat.read(str(notebook), as_version=4)
    return [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.fixture(scope="session")
def _store_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store with MLflow's schema, built once per MLflow version and kept beside
    pytest's temporary folders: building it takes seconds, a copy milliseconds (and `make mutate`
    starts one session per mutant)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.getbasetemp().parent / f"mlflow-{mlflow.__version__}-schema.db"
    if not path.exists():
        building = path.with_name(f"{path.name}.{os.getpid()}")
        MlflowClient(f"sqlite:///{building}").search_experiments(max_results=1)
        building.replace(path)  # whole or absent, whichever session wins
    return path


def copied_store(schema: Path, directory: Path) -> str:
    """The URI of a fresh SQLite MLflow store, ``directory/store/mlflow.db``: a copy of ``schema``."""
    database = directory / "store" / "mlflow.db"
    database.parent.mkdir()
    shutil.copyfile(schema, database)
    return f"sqlite:///{database}"


@pytest.fixture
def store(tmp_path: Path, _store_schema: Path) -> str:
    """A fresh SQLite MLflow store of this test's own, ``tmp_path/store/mlflow.db``."""
    return copied_store(_store_schema, tmp_path)
