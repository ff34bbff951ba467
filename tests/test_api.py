"""The Python API: ``batcat_nb.run`` and ``batcat_nb.submit`` with a real kernel."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from conftest import BATCAT, EXAMPLES, error_outputs, output_notebook, write_notebook

import batcat_nb
from batcat_nb.errors import ParameterError, RunFailed

pytestmark = pytest.mark.slow


def test_run_returns_a_result_with_status_run_id_outputs_and_metrics(project, experiment, runs_of):
    result = batcat_nb.run(
        str(EXAMPLES / "sales_report.ipynb"),
        parameters={"min_units": 1},
        experiment=experiment,
        outputs={"output": str(project / "out")},
        progress=False,
    )
    assert result.ok and result.status == "FINISHED"
    assert Path(result.output_notebook).is_file() and Path(result.html).is_file()
    assert result.metrics["rows"] == 8
    assert result.run_id == runs_of(experiment)[0].info.run_id
    assert "FINISHED" in str(result) and result.run_id in str(result)
    assert "<table>" in result._repr_html_()
    assert result.raise_for_status() is result


def test_failed_run_raises_only_when_asked(project, experiment):
    nb = write_notebook(project / "nb.ipynb", None, "1/0")
    result = batcat_nb.run(str(nb), experiment=experiment, progress=False)
    assert result.status == "FAILED" and result.error.ename == "ZeroDivisionError"
    with pytest.raises(RunFailed, match="ZeroDivisionError"):
        result.raise_for_status()


def test_submit_returns_at_once_and_wait_completes(project, experiment, runs_of):
    nb = write_notebook(
        project / "nb.ipynb",
        None,
        "import pathlib, time\nwhile not pathlib.Path('go').exists():\n    time.sleep(0.1)",
    )
    handle = batcat_nb.submit(str(nb), experiment=experiment, progress=False)
    assert handle.status() == "RUNNING"  # returned while the notebook waits for us
    assert runs_of(experiment)[0].info.status == "RUNNING"
    (project / "go").touch()
    result = handle.wait()
    assert result.status == "FINISHED" and handle.status() == "FINISHED"
    assert runs_of(experiment)[0].info.status == "FINISHED"


def test_cancel_stops_the_kernel_keeps_the_partial_notebook_and_kills_the_run(project, experiment, runs_of):
    nb = write_notebook(project / "nb.ipynb", None, "print('first cell ran')", "import time\ntime.sleep(120)")
    handle = batcat_nb.submit(str(nb), experiment=experiment, progress=False)
    _wait_for(lambda: "first cell ran" in _text(handle.spec.output_dir, "nb.ipynb"))
    handle.cancel()
    result = handle.wait(timeout=60)
    assert result.status == "KILLED" and result.reason == "cancelled"
    assert "first cell ran" in Path(result.output_notebook).read_text()
    assert runs_of(experiment)[0].info.status == "KILLED"


def test_ctrl_c_on_batcat_run_kills_the_run_and_shuts_the_kernel_down(project, experiment, runs_of):
    nb = write_notebook(
        project / "nb.ipynb",
        None,
        "import os\nopen('kernel.pid', 'w').write(str(os.getpid()))",
        "import time\ntime.sleep(120)",
    )
    process = subprocess.Popen(
        [BATCAT, "run", str(nb), "-e", experiment],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: (project / "kernel.pid").exists())
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "KILLED" in stdout and "interrupted by the user (Ctrl-C)" in stdout
    [run] = runs_of(experiment)
    assert run.info.status == "KILLED"
    assert run.data.tags["batcat.reason"] == "interrupted by the user (Ctrl-C)"
    kernel_pid = int((project / "kernel.pid").read_text())
    _wait_for(lambda: not _alive(kernel_pid))
    assert error_outputs(output_notebook(stdout)) == []  # stopped, not failed


def test_unknown_parameter_is_a_parameter_error(project):
    with pytest.raises(ParameterError, match="did you mean 'alpha'"):
        batcat_nb.run(str(EXAMPLES / "train_diabetes.ipynb"), parameters={"alpah": 1.0})


def test_inspect_returns_declared_parameters():
    names = [p.name for p in batcat_nb.inspect(str(EXAMPLES / "train_diabetes.ipynb"))]
    assert names == ["alpha", "l1_ratio", "test_size", "seed", "log_model"]


def test_notebook_runs_in_its_own_directory_with_its_files(project, experiment):
    (project / "helper.py").write_text("VALUE = 41\n")
    nb = write_notebook(project / "nb.ipynb", None, "from helper import VALUE\nassert VALUE == 41")
    result = batcat_nb.run(str(nb), experiment=experiment, progress=False)
    assert result.ok, result.reason
    executed = nbformat.read(result.output_notebook, as_version=4)
    assert executed.metadata.papermill.parameters == {}


def _text(directory: str, name: str) -> str:
    path = Path(directory) / name
    return path.read_text() if path.exists() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def test_sweep_from_python_ranks_by_the_objective(project, experiment):
    nb = write_notebook(
        project / "nb.ipynb", "x = 0", "import batcat_nb\nbatcat_nb.record('loss', abs(x - 1))"
    )
    result = batcat_nb.sweep(
        str(nb), grid={"x": [0, 1]}, runs=[{"x": 3}], objective="loss", experiment=experiment, progress=False
    )
    assert result.ok and [r.parameters["x"] for r in result.results] == ["1", "0", "3"]
    assert result.best is result.results[0] and "best loss=0" in str(result)
    assert "<table>" in result._repr_html_()
