"""Pure pieces: parameter parsing, parameter flags, configuration, job names."""

from __future__ import annotations

import re

import pytest

from batcat_nb.config import CoreConfig, resolve
from batcat_nb.errors import ConfigError, NotebookError
from batcat_nb.notebook import parse_parameters
from batcat_nb.parameters import collect, resolve_value
from batcat_nb.spec import job_name


def test_parameters_cell_types_defaults_and_help():
    params = parse_parameters(
        "# Learning rate\n"
        "lr: float = 1e-3\n"
        "epochs = 10  # passes over the data\n"
        "name = 'run'\n"
        "layers = [64, 32]\n"
        "cfg: dict | None = None\n"
        "flag = False\n"
        "computed = 2 * epochs\n"
        "import os\n"
    )
    by_name = {p.name: p for p in params}
    assert [p.name for p in params] == ["lr", "epochs", "name", "layers", "cfg", "flag", "computed"]
    assert (by_name["lr"].type_name, by_name["lr"].default, by_name["lr"].help) == (
        "float",
        "1e-3",
        "Learning rate",
    )
    assert (by_name["epochs"].type_name, by_name["epochs"].help) == ("int", "passes over the data")
    assert by_name["name"].type_name == "str" and by_name["layers"].type_name == "list"
    assert by_name["cfg"].type_name == "dict" and by_name["cfg"].optional
    assert by_name["flag"].type_name == "bool" and by_name["computed"].type_name == ""
    assert by_name["lr"].accepts(1) and not by_name["lr"].accepts("x")
    assert not by_name["epochs"].accepts(1.5) and not by_name["epochs"].accepts(True)
    assert by_name["cfg"].accepts(None) and by_name["computed"].accepts("anything")


def test_parameters_cell_that_is_not_python():
    with pytest.raises(NotebookError, match="line 1"):
        parse_parameters("x = = 1")


def test_flags_merge_in_papermill_order(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("a: 1\nb: 1\nc: 1\nd: 1\n")
    merged = collect(
        files=[f], yaml_texts=["b: 2\nc: 2\nd: 2"], values=[("c", "3"), ("d", "3")], raw=[("d", "4")]
    )
    assert merged == {"a": 1, "b": 2, "c": 3, "d": "4"}


@pytest.mark.parametrize(
    "text,value",
    [
        ("1", 1),
        ("1.5", 1.5),
        ("True", True),
        ("False", False),
        ("false", "false"),
        ("None", None),
        ("abc", "abc"),
        ("1e3", 1000.0),
    ],
)
def test_p_values_are_typed_as_papermill_types_them(text, value):
    assert resolve_value(text) == value and type(resolve_value(text)) is type(value)


def test_config_precedence_arguments_then_env_then_pyproject(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        "[tool.batcat]\nbackend = 'docker'\nexperiment = 'from-file'\ntimeout = 5\n"
        "[tool.batcat.docker]\nmemory = '1g'\n"
    )
    monkeypatch.setenv("BATCAT_EXPERIMENT", "from-env")
    monkeypatch.setenv("BATCAT_TIMEOUT", "7.5")
    config = resolve(CoreConfig, "", {"backend": "local", "experiment": None})
    assert (config.backend, config.experiment, config.timeout) == ("local", "from-env", 7.5)


def test_config_rejects_unknown_arguments_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'timeout'"):
        resolve(CoreConfig, "", {"timeot": 1})


def test_job_names_are_valid_sagemaker_names():
    name = job_name("A very long notebook name! with/odd chars" * 3)
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name)
    assert job_name("x") != job_name("x")
