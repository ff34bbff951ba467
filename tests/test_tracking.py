"""The tracking store: an MLflow server over HTTP, and completing runs from manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLES, run_batcat

import batcat_nb
from batcat_nb.manifest import FAILED, FINISHED, Manifest
from batcat_nb.tracking import Tracker

pytestmark = pytest.mark.slow


def test_run_against_a_tracking_server(project, experiment, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    done = run_batcat("run", str(EXAMPLES / "sales_report.ipynb"), "-e", experiment, "--output", "output=out")
    assert done.returncode == 0, done.stderr
    assert f"{mlflow_server}/#/experiments/" in done.stdout  # a link to the run in the UI
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(experiment)
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["rows"] == 8
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "sales_report.html" in artifacts


def test_completing_a_run_twice_changes_nothing(tmp_path, tracking_uri, experiment):
    """The second completion is refused, not merely harmless: it comes with a later time stamp
    and another output (MLflow would drop identical points silently, hiding a missing guard)."""
    tracker = Tracker(tracking_uri)
    run_id, _ = tracker.start_run(experiment=experiment, run_name="r", params={"a": 1}, tags={})
    points = {"loss": [(0.5, 0), (0.25, 1)]}
    (tmp_path / "out.txt").write_text("first")
    tracker.complete_run(run_id, Manifest("job", status=FINISHED, metrics=points, ended_at=2.0), tmp_path)
    (tmp_path / "out.txt").write_text("second")
    tracker.complete_run(run_id, Manifest("job", status=FAILED, metrics=points, ended_at=3.0), tmp_path)

    history = tracker.client.get_metric_history(run_id, "loss")
    assert [(m.value, m.step, m.timestamp) for m in history] == [(0.5, 0, 2000), (0.25, 1, 2000)]
    run = tracker.client.get_run(run_id)
    assert (run.info.status, run.info.end_time) == (FINISHED, 2000)
    fetched = tracker.client.download_artifacts(run_id, "out.txt", str(tmp_path / "fetched"))
    assert Path(fetched).read_text() == "first"


def test_recorded_metrics_reach_the_run_through_the_manifest(project, experiment, runs_of):
    """``record`` writes to the job's output, never to MLflow: the launcher logs it."""
    handle = batcat_nb.submit(
        str(EXAMPLES / "sales_report.ipynb"), experiment=experiment, outputs={"output": "out"}, progress=False
    )
    assert handle.spec.run_id
    result = handle.wait()
    [run] = runs_of(experiment)
    assert run.data.metrics["total_revenue"] == result.metrics["total_revenue"] > 0
    manifest = Manifest.read(Path(handle.spec.output_dir))
    assert manifest.status == FINISHED and manifest.metrics["rows"] == [(8.0, 0)]


def test_batcat_ui_serves_the_project_store(project, tracking_uri):
    import subprocess

    from conftest import BATCAT, free_port, wait_until_up

    port = free_port()
    with open(project / "ui.log", "wb") as log:
        process = subprocess.Popen(
            [BATCAT, "ui", "--port", str(port), "--tracking-uri", tracking_uri],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/health", process, project / "ui.log")
            assert f"at http://127.0.0.1:{port}" in (project / "ui.log").read_text()
        finally:
            process.terminate()
            process.wait(30)


def test_the_default_store_lives_in_a_folder_of_its_own_and_an_older_one_is_kept(tmp_path, monkeypatch):
    from batcat_nb.tracking import default_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert (
        default_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow-store' / 'mlflow.db'}"
    )  # a Docker job sees only it
    (tmp_path / "mlflow.db").write_bytes(b"")
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"  # a project's existing store
