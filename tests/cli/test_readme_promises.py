"""What the README promises about where runs go and how settings layer, through the real command:
the default store, ``[tool.batcat]`` < ``BATCAT_*`` < arguments, ``--tag``, ``-k``, and a
third-party backend found through the ``batcat_nb.backends`` entry-point group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, output_notebook, run_batcat, write_notebook

pytestmark = pytest.mark.slow

WHICH_KERNEL = "import sys\nprint('kernel:', sys._xoptions.get('batcat_kernel', 'python3'))"


def runs_in(database: Path, experiment: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{database}")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


@pytest.fixture
def bare(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project directory with no MLFLOW_TRACKING_URI: batcat's own defaults apply."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    return project


@pytest.fixture
def other_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A second kernel, ``batcat-other``: this Python, telling its name through an ``-X`` option
    (not its environment: a job's kernel gets the caller's)."""
    spec = tmp_path / "jupyter" / "kernels" / "batcat-other"
    spec.mkdir(parents=True)
    kernel = {
        "argv": [
            sys.executable,
            "-X",
            "batcat_kernel=batcat-other",
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
        ],
        "display_name": "other",
        "language": "python",
    }
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "batcat-other"


def test_default_store_is_mlflow_store_at_the_project_root_with_artifacts_beside_it(bare):
    (bare / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (bare / "notebooks").mkdir()
    nb = write_notebook(bare / "notebooks" / "nb.ipynb", "x = 1", "print('hello')")
    done = run_batcat("run", "nb.ipynb", "-e", "default-store", cwd=bare / "notebooks")
    assert done.returncode == 0, done.stderr

    store = bare / "mlflow-store"  # a folder of its own: a Docker job is given it, not the project
    assert not (bare / "notebooks" / "mlflow-store").exists()  # the project's root, not the cwd
    [run] = runs_in(store / "mlflow.db", "default-store")
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith(
        (store / "mlartifacts").as_uri()
    ) or run.info.artifact_uri.startswith(str(store / "mlartifacts"))
    assert list((store / "mlartifacts").rglob("nb.ipynb"))
    assert output_notebook(done.stdout).parent.parent == bare / "notebooks" / "batcat-runs"
    assert nb.exists()


def test_settings_layer_pyproject_then_environment_then_arguments(bare, other_kernel, monkeypatch):
    (bare / "pyproject.toml").write_text(
        "[tool.batcat]\n"
        "experiment = 'from-pyproject'\n"
        f"tracking_uri = 'sqlite:///{bare / 'pyproject.db'}'\n"
        "output_dir = 'pyproject-runs'\n"
        f"kernel = '{other_kernel}'\n"
    )
    write_notebook(bare / "nb.ipynb", "x = 1", WHICH_KERNEL)

    # [tool.batcat] wins over the defaults (mlflow.db, the notebook's name, batcat-runs/, python3)
    done = run_batcat("run", "nb.ipynb")
    assert done.returncode == 0, done.stderr
    [run] = runs_in(bare / "pyproject.db", "from-pyproject")
    assert run.data.tags["batcat.kernel"] == other_kernel
    assert f"kernel: {other_kernel}" in output_notebook(done.stdout).read_text()
    assert output_notebook(done.stdout).parent.parent == bare / "pyproject-runs"
    assert not (bare / "mlflow-store").exists()

    # BATCAT_* win over [tool.batcat]
    monkeypatch.setenv("BATCAT_EXPERIMENT", "from-env")
    monkeypatch.setenv("BATCAT_TRACKING_URI", f"sqlite:///{bare / 'env.db'}")
    monkeypatch.setenv("BATCAT_KERNEL", "python3")
    done = run_batcat("run", "nb.ipynb")
    assert done.returncode == 0, done.stderr
    [run] = runs_in(bare / "env.db", "from-env")
    assert run.data.tags["batcat.kernel"] == "python3"
    assert "kernel: python3" in output_notebook(done.stdout).read_text()

    monkeypatch.setenv("BATCAT_BACKEND", "nowhere")  # read: a backend that does not exist
    done = run_batcat("run", "nb.ipynb")
    assert done.returncode == 2 and "unknown backend 'nowhere'" in done.stderr

    # arguments win over both
    done = run_batcat(
        "run", "nb.ipynb", "--backend", "local", "-e", "from-args", "-k", other_kernel,
        "--tracking-uri", f"sqlite:///{bare / 'args.db'}", "--tag", "team=ml", "--tag", "ticket=B-7",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [run] = runs_in(bare / "args.db", "from-args")
    assert run.data.tags["batcat.kernel"] == other_kernel and run.data.tags["batcat.backend"] == "local"
    assert (run.data.tags["team"], run.data.tags["ticket"]) == ("ml", "B-7")
    assert f"kernel: {other_kernel}" in output_notebook(done.stdout).read_text()


BACKEND_PACKAGE = '''
"""A third-party backend: the local one, leaving a mark where it was asked to run a job."""
from pathlib import Path

from batcat_nb.backends.local.backend import LocalBackend


class EchoBackend(LocalBackend):
    name = "echo"

    def submit(self, spec):
        Path("echo-backend-ran").write_text(spec.job_name)
        return super().submit(spec)
'''


def echo_wheel(directory: Path) -> Path:
    """The plug-in as a wheel (written by hand: the venv has no ``wheel`` package to build one)."""
    info = "batcat_echo-0.1.dist-info"
    files = {
        "batcat_echo/__init__.py": BACKEND_PACKAGE,
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: batcat-echo\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": "[batcat_nb.backends]\necho = batcat_echo:EchoBackend\n",
    }
    record = [f"{name},," for name in files] + [f"{info}/RECORD,,"]
    wheel = directory / "batcat_echo-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def test_a_third_party_backend_is_found_through_its_entry_point(project, experiment, runs_of, tmp_path):
    """A real distribution, installed with pip into a directory on PYTHONPATH, found by
    importlib.metadata as any installed plug-in would be."""
    target = tmp_path / "site"
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        "--target",
        str(target),
    ]
    installed = subprocess.run([*pip, str(echo_wheel(tmp_path))], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    assert (target / "batcat_echo-0.1.dist-info" / "entry_points.txt").is_file()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO)])}
    nb = write_notebook(project / "nb.ipynb", "x = 1", "print(x)")
    listed = run_batcat("run", str(nb), "--backend", "ech", env=env)
    assert listed.returncode == 2 and "did you mean 'echo'" in listed.stderr  # listed among the available
    done = run_batcat("run", str(nb), "-e", experiment, "--backend", "echo", "-p", "x", "2", env=env)
    assert done.returncode == 0, done.stderr
    assert (project / "echo-backend-ran").read_text().startswith("nb-")
    [run] = runs_of(experiment)
    assert run.info.status == "FINISHED" and run.data.tags["batcat.backend"] == "echo"
