"""papermill's own entry points with ``--engine batcat``: tracked exactly like ``batcat run``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import EXAMPLES, write_notebook

pytestmark = pytest.mark.slow
PAPERMILL = str(Path(sys.executable).parent / "papermill")


def test_papermill_cli_with_batcat_engine_records_an_mlflow_run(
    project, experiment, runs_of, mlflow_client, monkeypatch
):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    done = subprocess.run(
        [
            PAPERMILL,
            str(EXAMPLES / "sales_report.ipynb"),
            "out.ipynb",
            "--engine",
            "batcat",
            "-p",
            "output_dir",
            str(project / "report"),
            "-p",
            "input_dir",
            str(EXAMPLES / "data" / "sales"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (project / "out.ipynb").is_file() and (project / "report" / "summary.csv").is_file()
    [run] = runs_of(experiment)
    assert run.info.status == "FINISHED"
    assert run.data.params["output_dir"] == str(project / "report")
    assert run.data.params["min_units"] == "0"  # the notebook's default
    assert run.data.metrics["rows"] == 8.0  # batcat_nb.record inside the notebook
    assert run.data.tags["batcat.backend"] == "papermill"
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"sales_report.ipynb", "sales_report.html", "batcat-manifest.json"} <= artifacts


def test_execute_notebook_with_batcat_engine_marks_failures(project, experiment, runs_of, monkeypatch):
    import papermill

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    nb = write_notebook(project / "nb.ipynb", "x = 1", "raise KeyError('gone')")
    with pytest.raises(papermill.PapermillExecutionError):
        papermill.execute_notebook(str(nb), "out.ipynb", engine_name="batcat", progress_bar=False)
    [run] = runs_of(experiment)
    assert run.info.status == "FAILED"
    assert run.data.tags["batcat.error.ename"] == "KeyError"


def test_mlflow_calls_in_the_notebook_land_on_the_same_run(project, experiment, runs_of, monkeypatch):
    import papermill

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    nb = write_notebook(
        project / "nb.ipynb",
        "lr = 0.1",
        "import mlflow\nmlflow.log_metric('loss', 0.5)\nmlflow.set_tag('from_notebook', 'yes')",
    )
    papermill.execute_notebook(str(nb), "out.ipynb", engine_name="batcat", progress_bar=False)
    [run] = runs_of(experiment)
    assert run.data.metrics["loss"] == 0.5 and run.data.tags["from_notebook"] == "yes"
    assert run.info.status == "FINISHED"


def test_record_under_plain_papermill_only_displays(project, runs_of):
    import papermill

    nb = write_notebook(project / "nb.ipynb", None, "import batcat_nb\nbatcat_nb.record('score', 0.75)")
    papermill.execute_notebook(str(nb), "out.ipynb", progress_bar=False)
    executed = nbformat.read("out.ipynb", as_version=4)
    assert "score: 0.75" in executed.cells[0].outputs[0]["data"]["text/plain"]
    assert not list(project.glob("*.jsonl"))
