"""``environment.txt``: the distributions importable where the job ran, read without pip."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from batcat_nb import environment
from batcat_nb.errors import UsageError


def test_installed_reads_names_and_versions_from_sys_path(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "Foo_Bar-1.2.3.dist-info").mkdir(parents=True)
    (site / "legacy.egg-info").mkdir()
    (site / "legacy.egg-info" / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: legacy\nVersion: 0.9\n")
    (site / "foo_bar").mkdir()  # a package folder, not a distribution
    (site / "local_thing-0.1.dist-info").mkdir()
    (site / "local_thing-0.1.dist-info" / "direct_url.json").write_text('{"url": "file:///src"}')
    shadowed = tmp_path / "later"
    (shadowed / "foo_bar-9.0.dist-info").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [str(site), str(shadowed), str(tmp_path / "missing")])

    installed = environment.installed()
    assert installed == {"foo-bar": "1.2.3", "legacy": "0.9", "local-thing": "0.1"}  # first on the path wins
    text = environment.describe()
    assert text.splitlines()[0].startswith(f"# python {sys.version_info.major}.{sys.version_info.minor}.")
    assert text.splitlines()[1:] == ["foo-bar==1.2.3", "legacy==0.9", "local-thing==0.1  # not from an index"]
    recorded = environment.recorded(text, "environment.txt")
    assert recorded.python == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert recorded.pins == {"foo-bar": "1.2.3", "legacy": "0.9"}
    assert recorded.not_from_index == ["local-thing==0.1"]


def test_this_environment_lists_what_batcat_runs_with():
    installed = environment.installed()
    assert {"papermill", "nbformat", "jupytext", "mlflow-skinny"} <= installed.keys()


HEADER = "# python 3.11.2 (CPython, linux)\n"


def test_a_recorded_environment_reads_back_pins_with_local_versions_and_epochs():
    text = HEADER + "torch==2.13.0+cpu\n\n# a comment\nFoo.Bar_baz==1!2.0.post1\n"
    assert environment.recorded(text, "e").pins == {"torch": "2.13.0+cpu", "foo-bar-baz": "1!2.0.post1"}


@pytest.mark.parametrize(
    "line",
    [
        "--index-url http://127.0.0.1:9/simple",
        "--extra-index-url=http://127.0.0.1:9/simple",
        "-e .",
        "-r /etc/passwd",
        "-c constraints.txt",
        "foo @ https://127.0.0.1:9/foo-1.0-py3-none-any.whl",
        "https://127.0.0.1:9/foo-1.0-py3-none-any.whl",
        "./foo-1.0-py3-none-any.whl",
        "foo==1.0 --hash=sha256:00",
        "foo==1.0; python_version > '3'",
        "foo>=1.0",
        "foo==-e",
        "foo==1.0  # not from an index --index-url http://127.0.0.1:9",
    ],
)
def test_a_recorded_environment_refuses_every_line_but_a_pin(line):
    with pytest.raises(UsageError, match="line 3 is not NAME==VERSION") as refused:
        environment.recorded(HEADER + "tabulate==0.8.10\n" + line + "\n", "environment.txt of run r1")
    message = str(refused.value)
    assert "\n" not in message and message.startswith("environment.txt of run r1 line 3")


def test_a_recorded_environment_without_its_python_line_is_refused():
    with pytest.raises(UsageError, match="does not start with '# python X.Y.Z'"):
        environment.recorded("tabulate==0.8.10\n", "environment.txt of run r1")


@pytest.mark.slow
def test_a_kernel_of_another_interpreter_records_that_interpreters_environment(
    project, experiment, mlflow_client, tmp_path
):
    """A kernelspec that starts another venv's python: its distributions are recorded, not the worker's."""
    import json
    import os
    import site
    import subprocess

    from conftest import run_batcat, write_notebook

    other = tmp_path / "other-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(other)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = other / "lib" / version / "site-packages"
    (packages / "dev.pth").write_text("\n".join(site.getsitepackages()) + "\n")  # ipykernel from here
    (packages / "kernel_only_marker-1.0.dist-info").mkdir()
    kernels = tmp_path / "jupyter" / "kernels" / "other"
    kernels.mkdir(parents=True)
    argv = [str(other / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (kernels / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "other", "language": "python"})
    )
    notebook = write_notebook(project / "nb.ipynb", None, "import sys; print(sys.prefix)", kernel="other")

    done = run_batcat(
        "run", str(notebook), "-e", experiment, "--no-progress",
        env={**os.environ, "JUPYTER_PATH": str(tmp_path / "jupyter")},
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    [run] = mlflow_client.search_runs([mlflow_client.get_experiment_by_name(experiment).experiment_id])
    recorded = mlflow_client.download_artifacts(run.info.run_id, "environment.txt", str(tmp_path))
    text = Path(recorded).read_text()
    assert "kernel-only-marker==1.0" in text.splitlines()  # in the kernel's venv only
    assert "kernel-only-marker" not in environment.installed()  # not the worker's
    assert text.startswith(f"# python {sys.version_info.major}.{sys.version_info.minor}.")
