"""Kill what runs a job, at each stage of a run, with real signals: the launcher (``batcat
run``), its worker, the agent. Each case ends with no run RUNNING and nothing recorded lost.

The notebook logs a metric, then waits for a file: a test kills something while the
notebook is known to run, then lets it go on (or not).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BATCAT, run_batcat, write_notebook

from batcat_nb.backends.local import agent as agents

pytestmark = pytest.mark.slow

FIRST = (
    "import os, pathlib, time, mlflow\n"
    "print('first cell ran')\n"
    "mlflow.log_metric('early', 1)\n"
    "pathlib.Path('worker.pid').write_text(str(os.getppid()))"
)
WAITS = "while not pathlib.Path('go').exists():\n    time.sleep(0.05)\nmlflow.log_metric('late', 2)"


def _wait_for(condition: Callable[[], Any], timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def job(project: Path, experiment: str) -> Callable[..., subprocess.Popen[str]]:
    """``batcat run`` of the waiting notebook, started; returns once the notebook runs."""
    nb = write_notebook(project / "nb.ipynb", None, FIRST, WAITS)

    def start(*extra: str) -> subprocess.Popen[str]:
        launcher = subprocess.Popen(
            [BATCAT, "run", str(nb), "-e", experiment, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=project,
        )
        _wait_for(lambda: (project / "worker.pid").exists() or launcher.poll() is not None)
        assert launcher.poll() is None, launcher.communicate()
        return launcher

    return start


def _run(runs_of: Callable[[str], list[Any]], experiment: str) -> Any:
    [run] = runs_of(experiment)
    return run


def _ended(runs_of: Callable[[str], list[Any]], experiment: str) -> Any:
    """The run once it is no longer RUNNING."""
    return _wait_for(lambda: next((r for r in runs_of(experiment) if r.info.status != "RUNNING"), None))


def _serving_agent() -> int:
    """The pid of the agent ``batcat`` uses here (its own Python is part of its environment)."""
    python = Path(BATCAT).read_text().splitlines()[0].removeprefix("#!")
    code = "from batcat_nb.backends.local import agent; print(agent.socket_path())"
    path = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    [pid] = [info["pid"] for found, info in agents.running_agents() if str(found) == path]
    return int(pid)


def _artifacts(mlflow_client: Any, run_id: str) -> set[str]:
    return {a.path for a in mlflow_client.list_artifacts(run_id)}


# --------------------------------------------------------------------------- the launcher


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_to_the_launcher_stops_the_job_as_ctrl_c_does(
    job, project, experiment, runs_of, mlflow_client, signum
):
    launcher = job()
    launcher.send_signal(signum)
    stdout, stderr = launcher.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert launcher.returncode == 128 + signum, stderr  # as a shell reports a death by signal
    run = _run(runs_of, experiment)
    assert run.info.status == "KILLED"
    assert run.data.tags["batcat.reason"] == f"stopped: the launcher got {name}"
    assert run.data.metrics["early"] == 1
    assert "nb.ipynb" in _artifacts(mlflow_client, run.info.run_id)
    partial = next((project / "batcat-runs").glob("*/nb.ipynb")).read_text()
    assert "first cell ran" in partial  # the partial notebook is kept


def test_a_launcher_killed_while_the_agent_runs_its_job_gets_its_run_completed_by_the_agent(
    job, project, experiment, runs_of, mlflow_client
):
    launcher = job()
    launcher.kill()  # SIGKILL: nothing of the launcher runs any more
    launcher.wait()
    assert _run(runs_of, experiment).info.status == "RUNNING"  # the job goes on
    (project / "go").touch()
    run = _ended(runs_of, experiment)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"early": 1.0, "late": 2.0}
    assert {"nb.ipynb", "nb.html", "batcat-manifest.json"} <= _artifacts(mlflow_client, run.info.run_id)


def test_a_launcher_killed_without_the_agent_is_completed_by_runs_reconcile_once_its_job_ended(
    job, project, experiment, runs_of, mlflow_client, monkeypatch, tracking_uri
):
    monkeypatch.setenv("BATCAT_AGENT", "0")
    launcher = job()
    launcher.kill()
    launcher.wait()
    early = run_batcat("runs", "reconcile", "--tracking-uri", tracking_uri)
    assert early.returncode == 0, early.stderr
    assert _run(runs_of, experiment).info.status == "RUNNING"  # its worker still runs it: left alone
    (project / "go").touch()
    _wait_for(lambda: not _alive(int((project / "worker.pid").read_text())))
    done = run_batcat("runs", "reconcile", "--tracking-uri", tracking_uri)
    run = _run(runs_of, experiment)
    assert done.returncode == 0 and f"{run.info.run_id} FINISHED" in done.stdout
    assert run.info.status == "FINISHED" and run.data.metrics == {"early": 1.0, "late": 2.0}
    assert {"nb.ipynb", "nb.html", "batcat-manifest.json"} <= _artifacts(mlflow_client, run.info.run_id)


def test_the_next_batcat_run_on_the_store_completes_a_run_whose_launcher_and_worker_were_killed(
    job, project, experiment, runs_of, mlflow_client, monkeypatch
):
    monkeypatch.setenv("BATCAT_AGENT", "0")
    launcher = job()
    worker = int((project / "worker.pid").read_text())
    launcher.kill()
    os.kill(worker, signal.SIGKILL)
    launcher.wait()
    _wait_for(lambda: not _alive(worker))
    other = write_notebook(project / "other.ipynb", None, "1")
    assert run_batcat("run", str(other), "-e", experiment + "-next").returncode == 0
    run = _run(runs_of, experiment)
    assert run.info.status == "FAILED"
    assert run.data.tags["batcat.reason"] == "its worker ended without a manifest (killed, or out of memory?)"
    assert run.data.metrics == {"early": 1.0}
    assert "nb.ipynb" in _artifacts(mlflow_client, run.info.run_id)  # the partial notebook


# --------------------------------------------------------------------------- the worker


@pytest.mark.parametrize("agent", ["1", "0"], ids=["warm-worker", "own-worker"])
def test_a_killed_worker_ends_its_run_failed_with_the_reason(
    job, project, experiment, runs_of, mlflow_client, monkeypatch, agent
):
    monkeypatch.setenv("BATCAT_AGENT", agent)
    launcher = job()
    os.kill(int((project / "worker.pid").read_text()), signal.SIGKILL)  # as the OOM killer would
    stdout, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 1, stderr
    run = _run(runs_of, experiment)
    assert run.info.status == "FAILED" and "without a manifest" in run.data.tags["batcat.reason"]
    assert run.data.metrics == {"early": 1.0}


# --------------------------------------------------------------------------- the agent


def test_a_killed_agent_loses_nothing_its_worker_finishes_the_job_and_the_launcher_completes_it(
    job, project, experiment, runs_of, mlflow_client
):
    launcher = job()
    pid = _serving_agent()
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: not _alive(pid))
    (project / "go").touch()
    stdout, stderr = launcher.communicate(timeout=180)
    assert launcher.returncode == 0, stdout + stderr
    run = _run(runs_of, experiment)
    assert run.info.status == "FINISHED" and run.data.metrics == {"early": 1.0, "late": 2.0}
    assert {"nb.ipynb", "nb.html"} <= _artifacts(mlflow_client, run.info.run_id)


def test_a_draining_agent_hands_over_at_once_and_still_completes_its_job(
    job, project, experiment, runs_of, mlflow_client
):
    launcher = job()
    old = _serving_agent()
    os.kill(old, signal.SIGTERM)  # busy: it drains
    other = write_notebook(project / "other.ipynb", None, "1")
    done = run_batcat("run", str(other), "-e", experiment + "-next")  # served by a new agent at once
    assert done.returncode == 0, done.stderr
    assert _serving_agent() != old and _alive(old)
    (project / "go").touch()
    stdout, stderr = launcher.communicate(timeout=180)
    assert launcher.returncode == 0, stdout + stderr
    run = _run(runs_of, experiment)  # complete_run for the ended job reached the store
    assert run.info.status == "FINISHED" and run.data.metrics == {"early": 1.0, "late": 2.0}
    _wait_for(lambda: not _alive(old))  # and the old agent left once its job was answered


# --------------------------------------------------------------------------- a container


@pytest.mark.docker
def test_a_container_whose_launcher_was_killed_is_found_collected_and_removed_by_reconcile(
    project, experiment, runs_of, mlflow_client, runner, engine, tracking_uri
):
    from docker_fixtures import job_containers

    nb = write_notebook(
        project / "nb.ipynb",
        None,
        "import pathlib, time, mlflow\nprint('first cell ran')\nmlflow.log_metric('early', 1)",
        WAITS.replace("pathlib.Path('go')", "pathlib.Path('/tmp/go')"),  # inputs are copied in at start
    )
    launcher = subprocess.Popen(
        [BATCAT, "run", str(nb), "-e", experiment, "-b", "docker", "--image", runner.image.tag],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=project,
    )  # fmt: skip
    _wait_for(lambda: any("early" in r.data.metrics for r in runs_of(experiment)))
    launcher.kill()
    launcher.wait()
    run = _run(runs_of, experiment)
    [container] = [c for c in job_containers(engine) if c.labels.get("io.batcat.run_id") == run.info.run_id]
    try:
        _reconcile_the_orphan(container, run, runs_of, experiment, mlflow_client, engine, tracking_uri)
    finally:  # a failure above must not leave the waiting container behind for later tests
        if container.id in {c.id for c in job_containers(engine)}:
            container.remove(force=True)


def _reconcile_the_orphan(container, run, runs_of, experiment, mlflow_client, engine, tracking_uri):
    from docker_fixtures import job_containers

    output = Path(container.labels["io.batcat.output"])
    assert container.labels["io.batcat.tracking"] == tracking_uri
    assert run_batcat("runs", "reconcile", "--tracking-uri", tracking_uri).returncode == 0
    assert _run(runs_of, experiment).info.status == "RUNNING"  # its container still runs it
    assert container.exec_run(["touch", "/tmp/go"]).exit_code == 0
    _wait_for(lambda: (container.reload(), container.status)[1] == "exited")
    done = run_batcat("runs", "reconcile", "--tracking-uri", tracking_uri)
    assert done.returncode == 0 and f"{run.info.run_id} FINISHED" in done.stdout, done.stderr
    run = _run(runs_of, experiment)
    assert run.info.status == "FINISHED" and run.data.metrics == {"early": 1.0, "late": 2.0}
    assert "first cell ran" in (output / "nb.ipynb").read_text()  # collected from the container
    assert {"nb.ipynb", "batcat-manifest.json"} <= _artifacts(mlflow_client, run.info.run_id)
    assert container.id not in {c.id for c in job_containers(engine)}  # removed
    assert not Path(container.labels["io.batcat.stage"]).exists()


@pytest.mark.parametrize("backend", ["sagemaker", "some-backend-not-installed-here"])
def test_reconcile_leaves_runs_of_backends_that_hold_no_lease_here(tmp_path, backend):
    """Only a backend that declares ``leased`` has its runs completed from a lease; a SageMaker job
    is completed by `batcat download`, and a backend this environment lacks is not guessed at."""
    from batcat_nb import lease
    from batcat_nb.reconcile import reconcile_store
    from batcat_nb.tracking import TAG_BACKEND, TAG_OUTPUT, Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    output = tmp_path / "out"
    output.mkdir()
    lease.lease_path(output).touch()  # abandoned: nobody holds it
    run_id, _ = tracker.start_run(
        experiment="e", run_name="r", params={}, tags={TAG_BACKEND: backend, TAG_OUTPUT: str(output)}
    )
    assert reconcile_store(tracker) == []
    assert tracker.client.get_run(run_id).info.status == "RUNNING"
