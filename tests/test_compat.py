"""Notebooks written elsewhere run or are read as papermill runs and reads them."""

from __future__ import annotations

import nbformat
from conftest import run_batcat, write_notebook

MAGIC_CELL = "%matplotlib inline\nalpha = 0.5  # learning rate\nn: int = 3\n"


def test_a_notebook_whose_kernelspec_is_python_runs_in_python3(project, experiment, runs_of):
    notebook = write_notebook(project / "nb.ipynb", "x = 2", "print('ran', x * 21)", kernel="python")

    done = run_batcat("run", str(notebook), "-e", experiment, "-p", "x", "1", "--no-progress")

    assert done.returncode == 0, done.stderr
    (run,) = runs_of(experiment)
    assert run.info.status == "FINISHED"
    executed = nbformat.read(next(project.glob("batcat-runs/*/nb.ipynb")), as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "ran 21\n"


def test_inspect_lists_the_readable_parameters_and_names_the_skipped_line(project):
    notebook = write_notebook(project / "nb.ipynb", MAGIC_CELL, "print(alpha)")

    done = run_batcat("inspect", str(notebook))

    assert done.returncode == 0, done.stderr
    listed = done.stdout.splitlines()[1:]
    assert [line.split()[:2] for line in listed] == [["alpha", "float"], ["n", "int"]]
    assert "learning rate" in listed[0]
    assert done.stderr.strip() == "batcat: skipped parameters line 1 (not Python): %matplotlib inline"


def test_run_refuses_a_parameters_cell_with_a_line_that_is_not_python_naming_it(project):
    notebook = write_notebook(project / "nb.ipynb", MAGIC_CELL, "print(alpha)")

    done = run_batcat("run", str(notebook), "-p", "alpha", "0.1")

    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "line 1 '%matplotlib inline'" in line and "parameters cell" in line
