"""The tracking store as users really give it and as it really behaves: a relative SQLite URI,
a store that is locked for a moment, a store that stays away."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import run_batcat, write_notebook

pytestmark = pytest.mark.slow

LOGS_A_METRIC = "import mlflow\nmlflow.log_metric('answer', 42)"


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []


@pytest.mark.parametrize("given", ["option", "environment"])
def test_a_relative_sqlite_uri_is_the_callers_store_for_the_run_and_the_notebook(
    project, experiment, agents, monkeypatch, given
):
    nb = write_notebook(project / "nb.ipynb", None, LOGS_A_METRIC)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    args = ["run", str(nb), "-e", experiment]
    if given == "option":
        args += ["--tracking-uri", "sqlite:///stores/mlflow.db"]
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///stores/mlflow.db")
    done = run_batcat(*args, cwd=project)  # through the agent, which runs in its own folder
    assert done.returncode == 0, done.stderr
    [run] = _runs(f"sqlite:///{project / 'stores' / 'mlflow.db'}")
    assert run.info.status == "FINISHED" and run.data.metrics == {"answer": 42.0}
    assert not list(agents.rglob("*.db"))  # nothing landed in the agent's folder


class _OnLog(logging.Handler):
    """Runs ``action`` once, when batcat logs a message containing ``text``."""

    def __init__(self, text: str, action: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.text, self.action, self.seen = text, action, 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen += 1
            if self.seen == 1:
                self.action()


@contextlib.contextmanager
def _on_log(text: str, action: Callable[[], None]) -> Iterator[_OnLog]:
    handler = _OnLog(text, action)
    logger = logging.getLogger("batcat_nb")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _lock(uri: str) -> sqlite3.Connection:
    """Another process's write transaction on the store: every writer gets 'database is locked'."""
    connection = sqlite3.connect(
        uri.removeprefix("sqlite:///"), timeout=0, isolation_level=None, check_same_thread=False
    )
    connection.execute("BEGIN EXCLUSIVE")
    return connection


def test_a_store_locked_for_a_moment_is_tried_again_and_the_run_created(tmp_path, experiment, monkeypatch):
    from batcat_nb.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    tracker.experiment_id(experiment)  # the store exists
    lock = _lock(uri)
    with _on_log("database is locked; trying again", lock.close) as seen:  # the writer finishes
        run_id, _ = tracker.start_run(experiment=experiment, run_name="r", params={"a": 1}, tags={})
    assert seen.seen == 1
    assert Tracker(uri).client.get_run(run_id).data.params == {"a": "1"}


def test_a_sweep_whose_store_stays_away_ends_its_parent_failed_with_the_reason(
    project, experiment, monkeypatch, mlflow_client, tracking_uri
):
    from batcat_nb.errors import TrackingError
    from batcat_nb.spec import RunRequest
    from batcat_nb.sweeps import SweepRequest, run_sweep

    monkeypatch.setenv("BATCAT_AGENT", "0")
    monkeypatch.setenv("BATCAT_TRACKING_RETRIES", "2")
    nb = write_notebook(
        project / "nb.ipynb",
        "alpha = 1",
        "import pathlib, time\npathlib.Path(f'started-{alpha}').touch()\n"
        "while not pathlib.Path('go').exists():\n    time.sleep(0.05)",
    )
    request = SweepRequest(
        RunRequest(str(nb), experiment=experiment, progress=False),
        [{"alpha": 1}, {"alpha": 2}],
        max_parallel=1,
    )
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            run_sweep(request)
        except BaseException as exc:
            outcome.append(exc)

    lock: list[sqlite3.Connection] = []
    with _on_log("giving up", lambda: lock[0].close()):  # the store comes back once it gave up
        sweep = threading.Thread(target=run)
        sweep.start()
        _wait_for(lambda: (project / "started-1").exists())
        lock.append(_lock(tracking_uri))  # the store goes away while the first job runs
        (project / "go").touch()
        sweep.join()
    [error] = outcome
    assert isinstance(error, TrackingError) and "database is locked" in str(error)
    [parent] = [
        r
        for r in _runs(tracking_uri)
        if "batcat.sweep.id" in r.data.tags
        and r.info.experiment_id == mlflow_client.get_experiment_by_name(experiment).experiment_id
    ]
    assert parent.info.status == "FAILED"
    assert "database is locked" in parent.data.tags["batcat.reason"]
    assert not (project / "started-2").exists()  # the sweep stopped there


def _wait_for(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
