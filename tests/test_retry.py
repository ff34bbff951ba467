"""``--retries``: infrastructure failures are submitted again, a notebook's own error never."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import subprocess_runner
from conftest import run_batcat, write_notebook

from batcat_nb import api
from batcat_nb.manifest import CellError
from batcat_nb.result import RunResult
from batcat_nb.retry import attempt_name, is_infrastructure_failure
from batcat_nb.spec import RunRequest

DIE_ONCE = """\
import os, signal
marker = os.environ["FLAKY_MARKER"]
if not os.path.exists(marker):  # the first kernel is killed for real, before any cell
    open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGKILL)
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""


@pytest.fixture
def flaky_kernel(tmp_path: Path) -> dict[str, str]:
    """A kernel 'flaky' whose first start is SIGKILLed; the environment that makes it visible."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "flaky"
    spec_dir.mkdir(parents=True)
    (tmp_path / "die_once.py").write_text(DIE_ONCE)
    argv = [sys.executable, str(tmp_path / "die_once.py"), "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "flaky", "language": "python"})
    )

    return {**os.environ, "JUPYTER_PATH": str(tmp_path / "jupyter"), "FLAKY_MARKER": str(tmp_path / "died")}


def _run(mlflow_client: Any, stdout: str) -> Any:
    [run_id] = [line.split()[2] for line in stdout.splitlines() if line.strip().startswith("mlflow run")]
    return mlflow_client.get_run(run_id)


@pytest.mark.slow
def test_a_kernel_killed_before_its_first_cell_is_retried_and_the_run_finishes(
    project, experiment, mlflow_client, flaky_kernel
):
    notebook = write_notebook(project / "nb.ipynb", "x = 1", "print('ran', x)", kernel="flaky")
    done = run_batcat(
        "run", str(notebook), "-e", experiment, "--retries", "2", "--no-progress", env=flaky_kernel
    )

    assert done.returncode == 0, done.stdout + done.stderr
    run = _run(mlflow_client, done.stdout)
    assert run.info.status == "FINISHED"
    assert run.data.tags["batcat.attempt"] == "2"
    assert run.data.tags["batcat.attempt.1.reason"].startswith("the kernel died before its first cell")
    assert "batcat.reason" not in run.data.tags  # the failed attempt's reason is not the run's


@pytest.mark.slow
def test_without_retries_a_dead_kernel_fails_the_run_saying_so(
    project, experiment, mlflow_client, flaky_kernel
):
    notebook = write_notebook(project / "nb.ipynb", "x = 1", "print('ran', x)", kernel="flaky")
    done = run_batcat("run", str(notebook), "-e", experiment, "--no-progress", env=flaky_kernel)

    assert done.returncode == 1
    run = _run(mlflow_client, done.stdout)
    assert run.data.tags["batcat.reason"].startswith("the kernel died before its first cell")
    assert run.data.tags["batcat.attempt"] == "1"


@pytest.mark.slow
def test_a_notebook_that_raises_is_not_retried(project, experiment, mlflow_client):
    notebook = write_notebook(
        project / "nb.ipynb", None, "raise RuntimeError('Kernel died, says the notebook')"
    )
    done = run_batcat("run", str(notebook), "-e", experiment, "--retries", "3", "--no-progress")

    assert done.returncode == 1
    run = _run(mlflow_client, done.stdout)
    assert run.info.status == "FAILED" and run.data.tags["batcat.attempt"] == "1"
    assert run.data.tags["batcat.error.ename"] == "RuntimeError"
    assert "attempt 2" not in done.stderr


@pytest.mark.slow
def test_a_sagemaker_internal_error_is_submitted_again(
    project, experiment, options, fake_sagemaker, mlflow_client
):
    failed: list[str] = []

    def fails_once(request: dict[str, Any], **kwargs: Any) -> Any:
        if not failed:  # the platform breaks before the container starts, as moto reports it
            failed.append(request["ProcessingJobName"])
            raise ConnectionError("instance lost")
        return subprocess_runner(request, **kwargs)

    fake_sagemaker.runner = fails_once
    notebook = write_notebook(project / "nb.ipynb", "x = 1", "import batcat_nb\nbatcat_nb.record('x', x)")
    request = RunRequest(
        notebook=str(notebook), backend="sagemaker", experiment=experiment,
        backend_options=dict(options, poll_interval=0.3), retries=1,
    )  # fmt: skip

    result = api.run(request)

    assert result.status == "FINISHED" and result.metrics == {"x": 1.0}
    assert result.job_name == failed[0] + "-a2"
    tags = mlflow_client.get_run(result.run_id).data.tags
    assert tags["batcat.attempt"] == "2"
    assert tags["batcat.attempt.1.reason"].startswith("InternalServerError: ConnectionError: instance lost")


def _result(status: str, reason: str, error: CellError | None = None) -> RunResult:
    return RunResult("j", status, "r", "e", "sqlite:///x", "local", reason=reason, error=error)


@pytest.mark.parametrize(
    ("result", "retried"),
    [
        (_result("FAILED", "the kernel died before its first cell (RuntimeError: ...)"), True),
        (_result("FAILED", "InternalServerError: We encountered an internal error"), True),
        (_result("FAILED", "CapacityError: Unable to provision requested ML compute capacity"), True),
        (
            _result("FAILED", "cell 2: ValueError: bad", CellError(2, "ValueError", "InternalServerError")),
            False,
        ),
        (_result("KILLED", "timed out after 5s (--timeout)"), False),
        (_result("FAILED", "AlgorithmError: See job logs for more information"), False),
        (_result("FINISHED", ""), False),
    ],
)
def test_only_infrastructure_failures_are_retried(result, retried):
    assert is_infrastructure_failure(result) is retried


def test_each_attempt_has_a_valid_sagemaker_job_name():
    name = "n" * 63
    assert attempt_name(name, 2) == "n" * 60 + "-a2"
    assert attempt_name("job-20261130-010157-c252", 3) == "job-20261130-010157-c252-a3"
