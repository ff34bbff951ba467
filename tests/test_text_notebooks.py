"""Notebooks kept as text (jupytext ``.py`` and ``.md``) through run, inspect and a sweep."""

from __future__ import annotations

import hashlib
from pathlib import Path

import jupytext
import nbformat
import pytest
from conftest import EXAMPLES, output_notebook, run_batcat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from batcat_nb.errors import NotebookError
from batcat_nb.notebook import load_notebook

FORMATS = {"percent": ("py", "py:percent"), "light": ("py", "py:light"), "myst": ("md", "md:myst")}


def write_text_notebook(path: Path, fmt: str) -> Path:
    """A notebook with a tagged parameters cell, written by jupytext itself in ``fmt``."""
    nb = new_notebook(
        cells=[
            new_markdown_cell("# A text notebook"),
            new_code_cell("alpha = 0.5  # the rate\nn = 3", metadata={"tags": ["parameters"]}),
            new_code_cell("import batcat_nb\nbatcat_nb.record('product', alpha * n)"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    path.write_text(jupytext.writes(nb, fmt=fmt))
    return path


@pytest.mark.parametrize("name", FORMATS)
def test_text_notebook_declares_its_parameters(tmp_path, name):
    suffix, fmt = FORMATS[name]
    notebook = load_notebook(write_text_notebook(tmp_path / f"nb.{suffix}", fmt))
    assert [(p.name, p.type_name, p.default, p.help) for p in notebook.parameters() or []] == [
        ("alpha", "float", "0.5", "the rate"),
        ("n", "int", "3", ""),
    ]
    assert notebook.kernel_name == "python3"


def test_a_text_file_that_is_not_a_notebook_is_one_line(tmp_path):
    (tmp_path / "empty.md").write_text("")
    with pytest.raises(NotebookError, match="empty.md holds no cells"):
        load_notebook(tmp_path / "empty.md")


def test_inspect_lists_a_percent_notebooks_parameters():
    done = run_batcat("inspect", str(EXAMPLES / "sales_totals.py"))
    assert done.returncode == 0, done.stderr
    assert "min_units  int    (default 1)  rows with fewer units are left out" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["percent", "light", "myst"])
def test_run_executes_a_text_notebook_into_ipynb_and_html_and_records_the_text_file(
    project, experiment, mlflow_client, name
):
    suffix, fmt = FORMATS[name]
    source = write_text_notebook(project / f"nb.{suffix}", fmt)
    done = run_batcat("run", str(source), "-p", "alpha", "2", "-e", experiment, "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    executed = output_notebook(done.stdout)
    assert executed.name == "nb.ipynb" and executed.with_suffix(".html").is_file()
    cells = nbformat.read(str(executed), as_version=4).cells
    assert "alpha = 2" in cells[2].source and "injected-parameters" in cells[2].metadata.tags
    [run] = mlflow_client.search_runs([mlflow_client.get_experiment_by_name(experiment).experiment_id])
    assert run.data.metrics["product"] == 6.0
    assert run.data.tags["batcat.notebook.path"] == str(source)
    assert run.data.tags["batcat.notebook.sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_sweep_runs_a_percent_notebook_in_the_repository(project, experiment, runs_of):
    done = run_batcat(
        "run",
        str(EXAMPLES / "sales_totals.py"),
        "--grid",
        "min_units=1,10",
        "-e",
        experiment,
        "--objective",
        "revenue_total",
        "--no-progress",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    children = [r for r in runs_of(experiment) if "mlflow.parentRunId" in r.data.tags]
    totals = {r.data.params["min_units"]: r.data.metrics["revenue_total"] for r in children}
    assert totals == {"1": 237.5, "10": 67.5}
    assert all(r.info.status == "FINISHED" for r in children)
