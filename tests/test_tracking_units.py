"""Fast checks of ``tracking.py`` against real MLflow stores in ``tmp_path`` (SQLite, the file
store, a small HTTP server for the health check), sharp enough for mutation testing
(``make mutate``): what a run records when it is created, completed, retried, ended or failed,
and which store a URI names."""

from __future__ import annotations

import getpass
import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from mlflow.tracking import MlflowClient  # imported once, before `make mutate` forks per mutant

import batcat_nb
from batcat_nb import tracking
from batcat_nb.errors import TrackingError
from batcat_nb.manifest import FAILED, FINISHED, KILLED, CellError, Manifest
from batcat_nb.tracking import Tracker

FIX = ". Set MLFLOW_TRACKING_URI (or --tracking-uri) to a store you can write, e.g. sqlite:///mlflow.db"


def _database(store: str) -> Path:
    return Path(store.removeprefix("sqlite:///"))


def _ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- which store


def test_a_relative_sqlite_uri_is_fixed_where_it_was_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.absolute_uri("sqlite:///runs/mlflow.db") == f"sqlite:///{tmp_path}/runs/mlflow.db"
    for kept in ("sqlite:////abs/mlflow.db", "sqlite:///:memory:", "sqlite:///", "http://h:5000", "runs.db"):
        assert tracking.absolute_uri(kept) == kept
    assert Tracker("sqlite:///m.db").uri == f"sqlite:///{tmp_path}/m.db"


def test_the_default_store_is_the_environments_else_the_projects_own_folder(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///here.db")
    assert tracking.default_tracking_uri() == f"sqlite:///{tmp_path}/sub/here.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # set but empty: the default
    assert tracking.default_tracking_uri() == f"sqlite:///{tmp_path}/mlflow-store/mlflow.db"
    (tmp_path / "mlflow.db").write_bytes(b"")  # a project that already has one keeps it
    assert tracking.default_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"


def test_a_job_is_told_its_run_and_every_run_carries_its_notebooks_provenance(tmp_path):
    assert tracking.run_env("sqlite:////s.db", "r1", "7") == {
        "MLFLOW_TRACKING_URI": "sqlite:////s.db",
        "MLFLOW_RUN_ID": "r1",
        "MLFLOW_EXPERIMENT_ID": "7",
    }
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text("{}")
    subprocess.run([*git, "add", "nb.ipynb"], check=True)
    subprocess.run([*git, "commit", "-qm", "nb"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    tags = tracking.run_tags(
        notebook_path=notebook, notebook_sha256="abc", backend="docker", kernel="ir", job_name="nb-1"
    )
    assert {k: v for k, v in tags.items() if ".git." not in k} == {
        "mlflow.source.name": str(notebook),
        "mlflow.source.type": "NOTEBOOK",
        "batcat.notebook.path": str(notebook),
        "batcat.notebook.sha256": "abc",
        "batcat.backend": "docker",
        "batcat.version": batcat_nb.__version__,
        "batcat.kernel": "ir",
        "batcat.job_name": "nb-1",
    }
    assert tags["mlflow.source.git.commit"] == commit and tags["batcat.git.dirty"] == "false"


def test_a_new_sqlite_store_is_made_with_its_folders(tmp_path):
    database = tmp_path / "a" / "b" / "mlflow.db"
    run_id, _ = Tracker(f"sqlite:///{database}").start_run(experiment="e", run_name="r", params={}, tags={})
    assert MlflowClient(f"sqlite:///{database}").get_run(run_id).info.status == "RUNNING"


def test_a_file_that_is_no_store_is_one_line_naming_the_store_and_the_fix(tmp_path):
    bad = tmp_path / "mlflow.db"
    bad.write_text("not a database\n" * 100)
    with pytest.raises(TrackingError) as caught:
        _ = Tracker(f"sqlite:///{bad}").client
    assert str(caught.value) == (
        f"cannot write to the MLflow tracking store sqlite:///{bad}: "
        f"(sqlite3.DatabaseError) file is not a database{FIX}"
    )


def test_a_store_problem_reads_as_one_masked_line_whatever_the_error():
    problem = tracking._store_problem
    store = "cannot write to the MLflow tracking store http://ada:***@h/: "
    assert problem("http://ada:pw@h/", ValueError("  first\nsecond  ")) == f"{store}first{FIX}"
    assert problem("http://ada:pw@h/", ValueError("x" * 400)) == f"{store}{'x' * 300}{FIX}"
    assert problem("http://ada:pw@h/", ValueError(" \n ")) == f"{store}ValueError{FIX}"


class _HealthOnly(http.server.ThreadingHTTPServer):
    """A server on 127.0.0.1 that answers ``/health`` and nothing of MLflow's API (``api_status``);
    it keeps each request's path and Authorization header."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None]] = []
        self.api_status = 404
        self.hang_up = False  # close each connection without an answer
        super().__init__(("127.0.0.1", 0), _Answer)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Answer(http.server.BaseHTTPRequestHandler):
    server: _HealthOnly

    def do_GET(self) -> None:
        path = self.requestline.split()[1]  # as sent: self.path has '//' made '/'
        self.server.asked.append((path, self.headers.get("Authorization")))
        if self.server.hang_up:
            self.close_connection = True
            return
        self.send_response(200 if path == "/health" else self.server.api_status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_only() -> Iterator[_HealthOnly]:
    server = _HealthOnly()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_tracking_server_is_asked_for_its_health_without_the_credentials_in_its_uri(
    health_only, monkeypatch
):
    port, asked = health_only.port, health_only.asked
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingError) as caught:
        _ = Tracker(f"http://ada:pw@127.0.0.1:{port}/").client  # healthy, but no MLflow API behind it
    assert asked[0] == ("/health", None)
    assert asked[1][0].startswith("/api/2.0/mlflow/experiments/search")
    message = str(caught.value)
    assert message.startswith(f"cannot write to the MLflow tracking store http://ada:***@127.0.0.1:{port}/: ")
    assert "pw" not in message and message.endswith(FIX)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_tracking_server_that_does_not_answer_is_one_line_naming_the_fix(scheme, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("BATCAT_TRACKING_RETRIES", "1")
    uri = f"{scheme}://ada:pw@127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError) as caught:
        Tracker(uri).start_run(experiment="e", run_name="r", params={}, tags={})
    assert str(caught.value) == (
        f"the MLflow tracking server {scheme}://ada:***@127.0.0.1:{uri.rsplit(':', 1)[1]} is not "
        "answering ([Errno 111] Connection refused); start it (`mlflow server`) or unset "
        "MLFLOW_TRACKING_URI to use the local SQLite store"
    )


def test_a_server_that_hangs_up_is_not_answering_either(health_only):
    health_only.hang_up = True
    hung_up = r"is not answering \(Remote end closed connection without response\)"
    with pytest.raises(TrackingError, match=hung_up):
        _ = Tracker(f"http://127.0.0.1:{health_only.port}").client


def test_a_server_away_for_a_moment_is_asked_again_and_the_warning_masks_its_uri(
    health_only, monkeypatch, caplog
):
    port, asked = health_only.port, health_only.asked
    health_only.api_status = 503
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("BATCAT_TRACKING_RETRIES", "2")
    with pytest.raises(TrackingError):
        _ = Tracker(f"http://ada:pw@127.0.0.1:{port}/").client  # answers 503: restarting, say
    assert len([path for path, _ in asked if path.startswith("/api/")]) == 2
    assert f"tracking store http://ada:***@127.0.0.1:{port}/: " in caplog.text
    assert "trying again" in caplog.text and "pw" not in caplog.text


# --------------------------------------------------------------------------- experiments


def test_an_experiment_is_found_restored_or_made_with_its_artifacts_beside_the_store(store):
    tracker = Tracker(store)
    made = tracker.experiment_id("team/exp")
    assert tracker.experiment_id("team/exp") == made
    client = MlflowClient(store)
    assert client.get_experiment(made).artifact_location == (
        f"file://{_database(store).parent}/mlartifacts/team_exp"
    )
    client.delete_experiment(made)
    assert tracker.experiment_id("team/exp") == made
    assert client.get_experiment(made).lifecycle_stage == "active"


def test_a_store_that_is_no_sqlite_file_places_the_artifacts_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = f"file://{tmp_path}/mlruns"
    made = Tracker(store).experiment_id("e")
    assert MlflowClient(store).get_experiment(made).artifact_location == f"{store}/{made}"


class _Raced(Tracker):
    """Another launcher creates the experiment between this one's look-up and its creation."""

    def _artifact_location(self, experiment: str) -> str | None:
        MlflowClient(self.uri).create_experiment(experiment)
        return super()._artifact_location(experiment)


def test_an_experiment_made_meanwhile_by_another_launcher_is_the_one_used(store):
    made = _Raced(store).experiment_id("e")
    assert made == MlflowClient(store).get_experiment_by_name("e").experiment_id


def test_an_experiment_the_store_refuses_is_one_line(store):
    with pytest.raises(TrackingError) as caught:
        Tracker(store).start_run(experiment="", run_name="r", params={}, tags={})
    assert str(caught.value) == (
        f"cannot write to the MLflow tracking store {store}: Invalid experiment name: ''{FIX}"
    )


# --------------------------------------------------------------------------- a run's life


def test_a_run_starts_running_with_its_name_user_tags_and_every_parameter(store, monkeypatch):
    monkeypatch.setenv("LOGNAME", "ada")
    params = {**{f"p{n:03}": n for n in range(250)}, "long": "x" * 7000}
    run_id, experiment_id = Tracker(store).start_run(
        experiment="e", run_name="nb-1", params=params, tags={"team": "t" * 6000}
    )
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert (run.info.status, run.info.run_name) == ("RUNNING", "nb-1")
    assert experiment_id == run.info.experiment_id == client.get_experiment_by_name("e").experiment_id
    assert run.data.params == {**{f"p{n:03}": str(n) for n in range(250)}, "long": "x" * 6000}
    tags = run.data.tags
    assert (tags["mlflow.runName"], tags["mlflow.user"], tags["team"]) == ("nb-1", "ada", "t" * 5000)


def test_a_user_the_system_cannot_name_is_recorded_as_unknown(store, monkeypatch):
    def nobody() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", nobody)
    run_id, _ = Tracker(store).start_run(experiment="e", run_name="r", params={}, tags={})
    assert MlflowClient(store).get_run(run_id).data.tags["mlflow.user"] == "unknown"


def test_completing_a_run_logs_every_point_its_error_and_its_files_once(store, tmp_path):
    tracker = Tracker(store)
    run_id, _ = tracker.start_run(experiment="e", run_name="r", params={}, tags={})
    output = tmp_path / "out"
    (output / "plots").mkdir(parents=True)
    (output / "nb.ipynb").write_text("{}")
    (output / "plots" / "a.png").write_bytes(b"png")
    (tmp_path / "secret.txt").write_text("host file")
    (output / "link").symlink_to(tmp_path / "secret.txt")  # a link out of the output: not logged
    manifest = Manifest(
        "job",
        status=FAILED,
        metrics={"loss": [(n, n) for n in range(1500)], "acc": [(0.5, 3)]},
        error=CellError(7, "ValueError", "v" * 6000),
        reason="r" * 6000,
        ended_at=1234.5,
    )
    tracker.complete_run(run_id, manifest, output)
    tracker.complete_run(run_id, Manifest("job", status=FINISHED, metrics={"acc": [(1.0, 4)]}), output)

    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert (run.info.status, run.info.end_time) == (FAILED, 1234500)
    loss = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value, m.timestamp) for m in loss) == [(n, n, 1234500) for n in range(1500)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "acc")] == [(3, 0.5)]
    tags = run.data.tags
    assert (tags["batcat.reason"], tags["batcat.error.cell_index"]) == ("r" * 5000, "7")
    assert (tags["batcat.error.ename"], tags["batcat.error.evalue"]) == ("ValueError", "v" * 5000)
    assert tags["batcat.completed"] == "true"
    assert [a.path for a in client.list_artifacts(run_id)] == ["nb.ipynb", "plots"]
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/a.png"]


def test_a_run_ended_without_metrics_or_output_still_gets_its_reason_and_status(store, tmp_path):
    tracker = Tracker(store)
    killed, _ = tracker.start_run(experiment="e", run_name="r", params={}, tags={})
    tracker.complete_run(killed, Manifest("job", status=KILLED, reason="cancelled", ended_at=9.0), None)
    failed, _ = tracker.start_run(experiment="e", run_name="r", params={}, tags={})
    before = _ms()
    error = CellError(0, "E", "v")
    tracker.complete_run(failed, Manifest("job", status=FAILED, error=error), tmp_path / "gone")
    client = MlflowClient(store)
    run = client.get_run(killed)
    assert (run.info.status, run.info.end_time, run.data.tags["batcat.reason"]) == (KILLED, 9000, "cancelled")
    assert "batcat.error.ename" not in run.data.tags and client.list_artifacts(killed) == []
    run = client.get_run(failed)
    assert run.info.status == FAILED and before <= run.info.end_time <= _ms()  # no end time: now
    assert run.data.tags["batcat.error.ename"] == "E" and "batcat.reason" not in run.data.tags
    assert client.list_artifacts(failed) == []


def test_completing_a_run_the_store_does_not_have_is_one_line(store):
    tracker = Tracker(store)
    tracker.experiment_id("e")
    with pytest.raises(TrackingError) as caught:
        tracker.complete_run("0123", Manifest("job", status=FINISHED), None)
    assert str(caught.value) == (
        f"cannot write to the MLflow tracking store {store}: Run with id=0123 not found{FIX}"
    )


def test_a_retried_run_is_reopened_keeping_why_each_attempt_failed(store):
    tracker = Tracker(store)
    run_id, _ = tracker.start_run(experiment="e", run_name="r", params={}, tags={"batcat.attempt": "1"})
    error = CellError(1, "E", "v")
    failed = Manifest("job", status=FAILED, reason="engine failed", error=error, ended_at=5.0)
    tracker.complete_run(run_id, failed, None)
    tracker.retry_run(run_id, 2, "x" * 6000)
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert {k: v for k, v in run.data.tags.items() if k.startswith("batcat.")} == {
        "batcat.attempt": "2",
        "batcat.attempt.1.reason": "x" * 5000,
    }
    tracker.retry_run(run_id, 3, "again")  # nothing left to remove: still fine
    tracker.complete_run(run_id, Manifest("job", status=FINISHED, ended_at=6.0), None)  # completes again
    run = client.get_run(run_id)
    assert run.info.status == FINISHED and run.data.tags["batcat.attempt"] == "3"
    assert run.data.tags["batcat.attempt.2.reason"] == "again"
    assert tracker.run_tags(run_id) == run.data.tags
    tracker.reopen_run(run_id)
    assert client.get_run(run_id).info.status == "RUNNING"


def test_a_launchers_own_run_ends_with_its_tags_and_final_metrics_or_its_reason(store):
    tracker = Tracker(store)
    parent, _ = tracker.start_run(experiment="e", run_name="p", params={}, tags={})
    before = _ms()
    tracker.end_run(parent, FAILED, {"summary": "s" * 6000, "count": 3}, {"best": 2})
    client = MlflowClient(store)
    run = client.get_run(parent)
    assert run.info.status == FAILED and before <= run.info.end_time <= _ms()
    assert (run.data.tags["summary"], run.data.tags["count"]) == ("s" * 5000, "3")
    [best] = client.get_metric_history(parent, "best")
    assert (best.value, best.step, best.timestamp) == (2.0, 0, run.info.end_time)
    orphan, _ = tracker.start_run(experiment="e", run_name="o", params={}, tags={})
    tracker.fail_run(orphan, KILLED, "r" * 6000)
    run = client.get_run(orphan)
    assert (run.info.status, run.data.tags["batcat.reason"]) == (KILLED, "r" * 5000)


def test_runs_are_found_by_tag_and_a_sweeps_finished_children_by_their_key(store):
    tracker = Tracker(store)
    parent, experiment_id = tracker.start_run(experiment="e", run_name="p", params={}, tags={"sweep": "s1"})
    other, _ = tracker.start_run(experiment="e", run_name="q", params={}, tags={})
    children = [(parent, "a", FINISHED), (parent, "b", FAILED), (parent, "c", FINISHED)]
    for of, key, status in [*children, (parent, None, FINISHED), (other, "z", FINISHED)]:
        tags = {"mlflow.parentRunId": of, **({"key": key} if key else {})}
        child, _ = tracker.start_run(experiment="e", run_name="c", params={}, tags=tags)
        tracker.end_run(child, status, {}, {})
    assert sorted(tracker.finished_children(experiment_id, parent, "key")) == ["", "a", "c"]
    assert tracker.find_run(experiment_id, "sweep", "s1") == parent
    assert tracker.find_run(experiment_id, "sweep", "s2") is None
