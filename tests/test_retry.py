"""``--retries``: infrastructure failures are submitted again, a notebook's own error never."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import subprocess_runner
from conftest import run_batcat, write_notebook

import batcat_nb
from batcat_nb import api, retry
from batcat_nb.cli.options import sweep_from_options
from batcat_nb.magics import parse_run_line
from batcat_nb.manifest import CellError
from batcat_nb.result import INTERRUPTED, RunResult
from batcat_nb.retry import KERNEL_DIED, attempt_name, is_infrastructure_failure
from batcat_nb.spec import RunRequest
from batcat_nb.sweeps import _Sweep

DIE_ONCE = """\
import os, signal
try:  # the first kernel is killed for real, before any cell; O_EXCL: only one, even in a sweep
    os.close(os.open(os.environ["FLAKY_MARKER"], os.O_CREAT | os.O_EXCL))
    os.kill(os.getpid(), signal.SIGKILL)
except FileExistsError:
    pass
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


# ---------------------------------------------------------------------------------------------
# Retries inside sweeps


def _children(mlflow_client: Any, runs_of: Any, experiment: str) -> list[Any]:
    return [r for r in runs_of(experiment) if "mlflow.parentRunId" in r.data.tags]


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["1", "0"])  # the agent's warm workers, or the sweep's own
def test_a_sweep_child_whose_kernel_died_is_retried_the_others_run_once(
    project, experiment, mlflow_client, runs_of, flaky_kernel, agent
):
    # one worker: the kernel that dies (its first, or the spare it starts for the next job) is
    # always used by a child; with more, a dead spare might be left unused
    notebook = write_notebook(project / "nb.ipynb", "x = 1", "print('ran', x)", kernel="flaky")
    done = run_batcat(
        "run", str(notebook), "-e", experiment, "--grid", "x=1,2,3", "--retries", "1", "--no-progress",
        "--max-parallel", "1", env={**flaky_kernel, "BATCAT_AGENT": agent},
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    children = _children(mlflow_client, runs_of, experiment)
    assert [c.info.status for c in children] == ["FINISHED"] * 3
    assert sorted(c.data.tags["batcat.attempt"] for c in children) == ["1", "1", "2"]
    [retried] = [c for c in children if c.data.tags["batcat.attempt"] == "2"]
    assert retried.data.tags["batcat.attempt.1.reason"].startswith(KERNEL_DIED)
    assert "3 run, 0 failed" in done.stdout


@pytest.mark.slow
def test_a_sweep_child_whose_notebook_raises_is_not_retried(project, experiment, mlflow_client, runs_of):
    raises = "if x == 2:\n    raise RuntimeError('InternalServerError, says the notebook')"
    notebook = write_notebook(project / "nb.ipynb", "x = 1", raises)
    swept = batcat_nb.sweep(str(notebook), {"x": [1, 2]}, experiment=experiment, retries=2, progress=False)

    [failed] = swept.failures
    assert failed.parameters["x"] == "2" and failed.error is not None
    children = _children(mlflow_client, runs_of, experiment)
    assert sorted((c.data.params["x"], c.info.status, c.data.tags["batcat.attempt"]) for c in children) == [
        ("1", "FINISHED", "1"),
        ("2", "FAILED", "1"),
    ]


@pytest.mark.slow
def test_a_sweep_stopped_while_a_child_waits_for_its_next_attempt_kills_it_at_once(
    project, experiment, mlflow_client, runs_of, flaky_kernel, monkeypatch
):
    for name in ("JUPYTER_PATH", "FLAKY_MARKER"):
        monkeypatch.setenv(name, flaky_kernel[name])
    monkeypatch.setattr(retry, "FIRST_DELAY", retry.MAX_DELAY)  # a stop must not wait for it
    notebook = write_notebook(project / "nb.ipynb", "x = 1", "print('ran', x)", kernel="flaky")
    ctrl_c = _on_log_line("attempt 2 in", lambda: os.kill(os.getpid(), signal.SIGINT))

    with ctrl_c:
        swept = batcat_nb.sweep(
            str(notebook), {"x": [1, 2]}, experiment=experiment, retries=1, max_parallel=1, progress=False
        )

    assert swept.interrupted
    # the child that met the dead kernel: the first, or the next (it took the worker's spare)
    [died] = [c for c in _children(mlflow_client, runs_of, experiment) if c.info.status != "FINISHED"]
    assert died.info.status == "KILLED"
    assert died.data.tags["batcat.attempt"] == "1"  # no second attempt was started
    assert died.data.tags["batcat.reason"] == INTERRUPTED


@pytest.mark.slow
def test_a_workflow_step_whose_kernel_died_is_retried_and_its_dependent_runs(
    project, experiment, mlflow_client, runs_of, flaky_kernel
):
    write_notebook(
        project / "flaky.ipynb", 'out_dir = "out"', "open(f'{out_dir}/n.txt', 'w').write('5')", kernel="flaky"
    )
    write_notebook(project / "after.ipynb", 'n_dir = "n"', "print('read', open(f'{n_dir}/n.txt').read())")
    (project / "wf.yaml").write_text(
        "steps:\n"
        "  first: {notebook: flaky.ipynb, outputs: [out], retries: 1}\n"
        "  second: {notebook: after.ipynb, inputs: {n: first.out}}\n"
    )
    done = run_batcat(
        "workflow",
        "run",
        str(project / "wf.yaml"),
        "--experiment",
        experiment,
        "--no-progress",
        env=flaky_kernel,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    steps = {
        r.data.tags["batcat.workflow.step"]: r
        for r in runs_of(experiment)
        if "batcat.workflow.step" in r.data.tags
    }
    assert steps["first"].info.status == "FINISHED" and steps["first"].data.tags["batcat.attempt"] == "2"
    assert steps["first"].data.tags["batcat.attempt.1.reason"].startswith(KERNEL_DIED)
    assert steps["second"].info.status == "FINISHED"  # it waited for the attempt that finished


@pytest.mark.slow
def test_ctrl_c_while_a_run_waits_for_its_next_attempt_ends_it_killed_at_once(
    project, experiment, mlflow_client, runs_of, flaky_kernel, monkeypatch
):
    for name in ("JUPYTER_PATH", "FLAKY_MARKER"):
        monkeypatch.setenv(name, flaky_kernel[name])
    monkeypatch.setattr(retry, "FIRST_DELAY", retry.MAX_DELAY)  # Ctrl-C must not wait for it
    notebook = write_notebook(project / "nb.ipynb", "x = 1", "print('ran', x)", kernel="flaky")

    try:
        with _on_log_line("attempt 2 in", lambda: os.kill(os.getpid(), signal.SIGINT)):
            result = batcat_nb.run(str(notebook), experiment=experiment, retries=1, progress=False)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C between attempts escaped batcat_nb.run instead of ending the run KILLED")

    assert (result.status, result.reason) == ("KILLED", INTERRUPTED)
    [run] = runs_of(experiment)
    assert run.info.status == "KILLED" and run.data.tags["batcat.reason"] == INTERRUPTED
    assert run.data.tags["batcat.attempt"] == "1"  # no second attempt was started


def test_the_magic_passes_retries_to_every_sweep_child(project):
    notebook = write_notebook(project / "nb.ipynb", "x = 1")
    parsed = parse_run_line(f"{notebook} --grid x=1,2 --retries 2", lambda: None)
    assert parsed is not None

    sweep = _Sweep(sweep_from_options(parsed[0]))

    assert [spec.retries for spec in sweep.specs] == [2, 2]


@contextlib.contextmanager
def _on_log_line(text: str, action: Callable[[], None]) -> Iterator[None]:
    """Call ``action`` once batcat logs a line containing ``text``."""

    class Trigger(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                action()

    handler = Trigger(logging.WARNING)
    logging.getLogger("batcat_nb").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("batcat_nb").removeHandler(handler)


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
