"""The magics in real kernels: ``magics/tour.ipynb`` and notebooks that run themselves.

Each notebook is executed with nbclient, as Jupyter would; its kernel inherits this process's
environment (the session's MLflow store). The checks read what a user sees: the displayed
outputs, and the MLflow runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import REPO, output_notebook, run_batcat, write_notebook

pytestmark = pytest.mark.slow

TOUR = REPO / "magics" / "tour.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"


def execute(nb: Any, cwd: Path, timeout: float = 240) -> Any:
    """Run every cell in a fresh python3 kernel started in ``cwd``, as Jupyter does."""
    from nbclient import NotebookClient

    NotebookClient(
        nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def outputs(cell: Any, kind: str) -> str:
    """All of a cell's outputs of one kind: a stream name, or a mime type of displayed data."""
    found = []
    for output in cell.get("outputs", []):
        if output.get("name") == kind:
            found.append(output["text"])
        elif kind in output.get("data", {}):
            found.append(output["data"][kind])
    return "".join(found)


def has_widget(cell: Any) -> bool:
    return any(WIDGET in output.get("data", {}) for output in cell.get("outputs", []))


def cell_with(nb: Any, text: str) -> Any:
    return next(cell for cell in nb.cells if cell.cell_type == "code" and text in cell.source)


def test_the_tour_runs_every_magic_and_records_its_runs(project, experiment, runs_of, monkeypatch):
    monkeypatch.setenv("BATCAT_OUTPUT_DIR", str(project / "batcat-runs"))  # not beside the tour
    nb = nbformat.read(str(TOUR), as_version=4)
    parameters = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = f"experiment = {experiment!r}\nreport_dir = {str(project / 'report')!r}"
    execute(nb, TOUR.parent)

    errors = [(c.source, o) for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    params = cell_with(nb, "%batcat_params")
    assert "<td style='text-align:left'>l1_ratio</td>" in outputs(params, "text/html")

    hello = outputs(cell_with(nb, "hello.ipynb -p alpha=$alpha"), "text/html")
    assert "class='batcat-result'" in hello and ">FINISHED<" in hello
    assert has_widget(cell_with(nb, "hello.ipynb -p alpha=$alpha"))  # the progress bar
    sales = outputs(cell_with(nb, "sales_report.ipynb"), "text/plain")
    assert "total_revenue=" in sales and str(project / "report") in sales
    assert (project / "report" / "summary.csv").is_file()
    assert "RUNNING" in outputs(cell_with(nb, "%batcat_status"), "text/html")
    assert "KILLED" in outputs(cell_with(nb, "%batcat_stop"), "text/html")

    table = outputs(cell_with(nb, "%batcat_runs"), "text/html")
    assert "<table" in table and "params.alpha" in table and "metrics.test.rmse" in table
    mistake = cell_with(nb, "alhpa")
    assert outputs(mistake, "stderr").startswith("UsageError: hello.ipynb has no parameter 'alhpa'")
    assert outputs(mistake, "stderr").count("\n") == 1  # one line, no traceback

    runs = runs_of(experiment)
    notebook = {r.info.run_id: Path(r.data.tags["batcat.notebook.path"]).stem for r in runs}
    assert sorted((notebook[r.info.run_id], r.info.status) for r in runs) == [
        ("hello", "FINISHED"), ("sales_report", "FINISHED"),
        ("train_diabetes", "FINISHED"), ("train_diabetes", "FINISHED"), ("train_diabetes", "KILLED"),
    ]  # fmt: skip
    (hello_run,) = [r for r in runs if notebook[r.info.run_id] == "hello"]
    assert hello_run.data.params["alpha"] == "0.25" and hello_run.data.params["n"] == "4"
    trained = sorted(
        (r for r in runs if "test.rmse" in r.data.metrics), key=lambda r: r.data.metrics["test.rmse"]
    )
    assert table.index(trained[0].info.run_name) < table.index(trained[1].info.run_name)  # lowest rmse first


def test_a_notebook_runs_itself_from_jupyterlab_and_its_job_submits_nothing(
    project, experiment, runs_of, monkeypatch
):
    notebook = write_notebook(
        project / "self.ipynb",
        f"experiment = {experiment!r}",
        "%load_ext batcat_nb",
        "result = %batcat_run -e $experiment\nresult",
        "%batcat_status",
    )
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))  # what JupyterLab gives the kernel
    nb = execute(nbformat.read(str(notebook), as_version=4), project)

    run_cell = cell_with(nb, "%batcat_run")
    assert f"batcat: running this notebook, {notebook}, as last saved" in outputs(run_cell, "stdout")
    assert ">FINISHED<" in outputs(run_cell, "text/html")
    (run,) = runs_of(experiment)  # one run: the job itself submitted nothing
    assert run.info.status == "FINISHED"
    job_name = run.data.tags["batcat.job_name"]
    executed = nbformat.read(str(project / "batcat-runs" / job_name / "self.ipynb"), as_version=4)
    inner = outputs(cell_with(executed, "%batcat_run"), "stdout")
    assert f"batcat: not submitting: this notebook is itself running as the batch job {job_name}" in inner
    assert "does nothing inside the batch job" in outputs(cell_with(executed, "%batcat_status"), "stdout")


def test_the_tour_run_by_batcat_run_finishes_without_submitting_anything(project, experiment, runs_of):
    inner = f"{experiment}-inner"  # where the tour's own %batcat_run lines would put their runs
    done = run_batcat(
        "run",
        str(TOUR),
        "-e",
        experiment,
        "-p",
        "experiment",
        inner,
        "--no-progress",
        cwd=project,
        env=_no_session(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r.info.status for r in runs_of(experiment)] == ["FINISHED"]  # the job itself
    assert runs_of(inner) == []
    executed = nbformat.read(str(output_notebook(done.stdout)), as_version=4)
    assert "this notebook is itself running as the batch job" in outputs(
        cell_with(executed, "--no-wait"), "stdout"
    )
    assert "%batcat_stop does nothing inside the batch job" in outputs(
        cell_with(executed, "%batcat_stop"), "stdout"
    )


def _no_session() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "JPY_SESSION_NAME"}


def test_the_summary_card_shows_once_whether_or_not_the_result_is_assigned(project, experiment):
    hello = REPO / "notebooks" / "hello.ipynb"
    notebook = write_notebook(
        project / "cards.ipynb",
        None,
        "%load_ext batcat_nb",
        f"r = %batcat_run {hello} -e {experiment}",
        f"%batcat_run {hello} -e {experiment} --no-progress",
        "r",
        f"s = %batcat_run {hello} -e {experiment} --grid n=1,2 --no-progress",
    )
    nb = execute(nbformat.read(str(notebook), as_version=4), project)

    def cards(cell: Any) -> int:
        return sum("class='batcat-result'" in o.get("data", {}).get("text/html", "") for o in cell.outputs)

    assigned, bare = cell_with(nb, "r = %batcat_run"), cell_with(nb, "--no-progress")
    later = next(cell for cell in nb.cells if cell.source == "r")
    assert (cards(assigned), cards(bare), cards(later)) == (1, 1, 1)  # a later cell shows it again
    sweep = cell_with(nb, "--grid")
    assert sum("<table" in o.get("data", {}).get("text/html", "") for o in sweep.outputs) == 1
    assert has_widget(assigned) and "Executing" not in outputs(assigned, "stderr")  # a widget, not stderr
    assert not has_widget(bare)
