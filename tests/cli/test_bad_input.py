"""Every user mistake: one clear line naming the problem and the fix, no traceback."""

from __future__ import annotations

import json

import pytest
from conftest import EXAMPLES, run_batcat, write_notebook


def assert_one_line_error(done, *fragments: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("batcat: error:")]
    assert len(errors) == 1, done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_missing_notebook(project):
    assert_one_line_error(run_batcat("run", "nope.ipynb"), "notebook not found: nope.ipynb")


def test_file_that_is_not_json(project):
    (project / "bad.ipynb").write_text("{not json")
    assert_one_line_error(run_batcat("run", "bad.ipynb"), "is not a notebook", "not valid JSON")


def test_old_nbformat(project):
    (project / "old.ipynb").write_text(json.dumps({"nbformat": 3, "cells": [], "worksheets": []}))
    assert_one_line_error(run_batcat("run", "old.ipynb"), "nbformat 3", "jupyter nbconvert")


def test_unknown_parameter_names_the_closest_declared_one(project):
    done = run_batcat("run", str(EXAMPLES / "train_diabetes.ipynb"), "-p", "alpah", "0.1")
    assert_one_line_error(done, "no parameter 'alpah'", "did you mean 'alpha'", "--allow-unknown")


def test_unknown_parameter_hint_names_the_closest_not_the_first_declared(project):
    """``test_size`` is declared third: the hint must not fall back to the first (``alpha``)."""
    done = run_batcat("run", str(EXAMPLES / "train_diabetes.ipynb"), "-p", "test_sise", "0.3")
    assert_one_line_error(done, "no parameter 'test_sise'", "(did you mean 'test_size'?)")


def test_value_of_the_wrong_type(project):
    done = run_batcat("run", str(EXAMPLES / "train_diabetes.ipynb"), "-p", "seed", "abc")
    assert_one_line_error(done, "parameter 'seed' expects int", "'abc'")


def test_string_parameter_given_a_number_suggests_raw(project):
    nb = write_notebook(project / "nb.ipynb", "label = 'a'")
    assert_one_line_error(run_batcat("run", str(nb), "-p", "label", "7"), "-r label VALUE")


def test_bad_yaml_parameters(project):
    done = run_batcat("run", str(EXAMPLES / "train_diabetes.ipynb"), "-y", "alpha: [1")
    assert_one_line_error(done, "-y", "not valid YAML")


def test_missing_parameters_file(project):
    done = run_batcat("run", str(EXAMPLES / "train_diabetes.ipynb"), "-f", "missing.yaml")
    assert_one_line_error(done, "parameters file not found: missing.yaml")


def test_kernel_that_is_not_installed(project, experiment, runs_of):
    nb = write_notebook(project / "nb.ipynb", "x = 1", kernel="julia-1.9")
    done = run_batcat("run", str(nb), "-e", experiment)
    assert_one_line_error(done, "kernel 'julia-1.9' is not installed", "--kernel")
    assert runs_of(experiment) == []  # rejected before any run was created


def test_unknown_backend_lists_the_available_ones(project):
    done = run_batcat("run", str(EXAMPLES / "hello.ipynb"), "--backend", "locl")
    assert_one_line_error(done, "unknown backend 'locl'", "did you mean 'local'", "available:")


def test_missing_input_path(project):
    done = run_batcat("run", str(EXAMPLES / "sales_report.ipynb"), "--input", "input=nowhere")
    assert_one_line_error(done, "input 'input'", "nowhere does not exist")


def test_input_given_twice(project):
    done = run_batcat("run", str(EXAMPLES / "sales_report.ipynb"), "--output", "a=x", "--output", "a=y")
    assert_one_line_error(done, "--output a is given twice")


def test_reserved_channel_name(project):
    done = run_batcat("run", str(EXAMPLES / "hello.ipynb"), "--output", "notebook=x")
    assert_one_line_error(done, "'notebook' is a channel batcat uses itself")


def test_tracking_store_that_cannot_be_written(project, monkeypatch):
    locked = project / "locked"
    locked.mkdir()
    (locked / "mlflow.db").write_text("this is not a database")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{locked / 'mlflow.db'}")
    done = run_batcat("run", str(EXAMPLES / "hello.ipynb"))
    assert_one_line_error(done, "cannot write to the MLflow tracking store", "MLFLOW_TRACKING_URI")


def test_tracking_server_that_is_down(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    done = run_batcat("run", str(EXAMPLES / "hello.ipynb"))
    assert_one_line_error(done, "tracking server http://127.0.0.1:9 is not answering")


def test_unknown_key_in_pyproject_is_named_with_a_suggestion(project):
    (project / "pyproject.toml").write_text("[tool.batcat]\nbackedn = 'local'\n")
    done = run_batcat("run", str(EXAMPLES / "hello.ipynb"))
    assert_one_line_error(done, "unknown key 'backedn'", "did you mean 'backend'")


@pytest.mark.parametrize("args", [["run"], ["run", "--nope", "x.ipynb"]])
def test_cli_usage_mistakes_exit_2_without_traceback(project, args):
    done = run_batcat(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
