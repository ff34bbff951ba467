"""The batcat agent: warm starts that still give every job a fresh kernel in the caller's world."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import run_batcat, write_notebook

import batcat_nb

pytestmark = pytest.mark.slow


def agent_pids() -> list[str]:
    done = run_batcat("agent", "status")
    return [line.split()[2] for line in done.stdout.splitlines() if " pid " in line]


def warm_workers() -> set[int]:
    """The pids of the agent's serve-mode workers (children of the agent processes)."""
    agents = {int(pid) for pid in agent_pids()}
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent in agents and b"batcat_nb.worker" in command and b"--serve" in command:
            found.add(int(proc.name))
    return found


def test_a_second_run_reuses_the_agent_with_the_callers_environment_and_directory(
    project, experiment, runs_of, monkeypatch
):
    nb = write_notebook(
        project / "env.ipynb",
        None,
        "import os\nprint('CALLER', os.environ.get('MY_SETTING'), os.environ.get('GONE'), os.getcwd())",
    )
    monkeypatch.setenv("GONE", "present")
    first = run_batcat("run", str(nb), "-e", experiment, "--log-output")
    assert first.returncode == 0, first.stderr
    assert f"CALLER None present {project}" in first.stderr
    before = agent_pids()
    assert before

    monkeypatch.setenv("MY_SETTING", "42")
    monkeypatch.delenv("GONE")
    second = run_batcat("run", str(nb), "-e", experiment, "--log-output")
    assert second.returncode == 0, second.stderr
    assert f"CALLER 42 None {project}" in second.stderr  # a kernel started earlier, yet ours
    assert agent_pids() == before
    assert [r.info.status for r in runs_of(experiment)] == ["FINISHED", "FINISHED"]


def test_a_module_imported_by_one_run_is_not_there_in_the_next(project, experiment):
    nb = write_notebook(
        project / "state.ipynb",
        None,
        "assert 'json' not in dir(), 'state leaked from an earlier run'\nimport json",
    )
    for _ in range(3):
        done = run_batcat("run", str(nb), "-e", experiment)
        assert done.returncode == 0, done.stdout


def test_without_the_agent_nothing_stays_behind(project, experiment, runs_of, monkeypatch, tmp_path):
    monkeypatch.setenv("BATCAT_AGENT", "0")
    monkeypatch.setenv("BATCAT_AGENT_DIR", str(tmp_path / "agents"))
    nb = write_notebook(project / "nb.ipynb", "x = 1", "x")
    done = run_batcat("run", str(nb), "-e", experiment)
    assert done.returncode == 0, done.stderr
    assert runs_of(experiment)[0].info.status == "FINISHED"
    assert not list((tmp_path / "agents").glob("*.sock"))


def test_an_idle_agent_stops_by_itself(project, experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("BATCAT_AGENT_DIR", str(tmp_path / "agents"))
    monkeypatch.setenv("BATCAT_AGENT_IDLE", "2")
    nb = write_notebook(project / "nb.ipynb", "x = 1", "x")
    assert run_batcat("run", str(nb), "-e", experiment).returncode == 0
    deadline = time.monotonic() + 30
    while agent_pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert agent_pids() == []
    assert not list((tmp_path / "agents").glob("*.sock"))


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie has ended: it only waits for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_agent_stop_ends_every_agent_with_its_workers_and_sockets(project, experiment, monkeypatch, tmp_path):
    agents_dir = tmp_path / "agents"
    monkeypatch.setenv("BATCAT_AGENT_DIR", str(agents_dir))
    nb = write_notebook(project / "nb.ipynb", "x = 1", "x")
    assert run_batcat("run", str(nb), "-e", experiment).returncode == 0
    processes = {int(pid) for pid in agent_pids()} | warm_workers()
    assert len(processes) >= 2 and list(agents_dir.glob("*.sock"))  # an agent and its workers

    done = run_batcat("agent", "stop")
    assert done.returncode == 0 and done.stdout.strip() == "stopped 1 agent(s)"
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling: the agent stops its workers, then itself
    assert not [pid for pid in processes if alive(pid)]
    assert not list(agents_dir.glob("*.sock"))
    assert run_batcat("agent", "status").stdout.strip() == "no agent is running"


def test_a_stop_that_reaches_a_warm_worker_between_jobs_is_ignored(project, experiment, runs_of):
    nb = write_notebook(project / "nb.ipynb", "x = 1", "x")
    assert run_batcat("run", str(nb), "-e", experiment).returncode == 0
    workers = warm_workers()
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGTERM)  # as a stop that arrives just after its job ended
    time.sleep(0.5)

    done = run_batcat("run", str(nb), "-e", experiment, "--grid", "x=1,2,3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert warm_workers() >= workers  # still serving
    assert {r.info.status for r in runs_of(experiment)} == {"FINISHED"}


def test_a_stopped_job_ends_killed_and_its_warm_worker_serves_the_next(project, experiment, runs_of):
    quick = write_notebook(project / "quick.ipynb", "x = 1", "x")
    slow = write_notebook(
        project / "slow.ipynb", None, "import pathlib, time\npathlib.Path('started').touch()\ntime.sleep(60)"
    )
    assert run_batcat("run", str(quick), "-e", experiment).returncode == 0
    workers = warm_workers()
    handle = batcat_nb.submit(str(slow), experiment=experiment, progress=False)
    deadline = time.monotonic() + 60
    while not (project / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    handle.cancel()
    assert handle.wait().status == "KILLED"

    assert run_batcat("run", str(quick), "-e", experiment).returncode == 0
    assert warm_workers() >= workers
    assert [r.info.status for r in runs_of(experiment)] == ["FINISHED", "KILLED", "FINISHED"]


def test_a_warm_worker_that_dies_is_replaced_and_no_later_job_is_lost(project, experiment, runs_of):
    nb = write_notebook(project / "nb.ipynb", "x = 1", "x")
    assert run_batcat("run", str(nb), "-e", experiment).returncode == 0
    workers = warm_workers()
    for pid in workers:
        os.kill(pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would

    done = run_batcat("run", str(nb), "-e", experiment, "--grid", "x=1,2,3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert warm_workers().isdisjoint(workers)
    statuses = [r.info.status for r in runs_of(experiment)]
    assert statuses.count("FINISHED") == 5  # the first run, three children and their parent


def test_a_job_cancelled_while_it_waits_for_a_warm_worker_never_starts(
    project, experiment, runs_of, monkeypatch, tmp_path
):
    monkeypatch.setenv("BATCAT_AGENT_DIR", str(tmp_path / "agents"))  # a new agent: its first pool
    monkeypatch.setenv("BATCAT_AGENT_IDLE", "5")
    slow = write_notebook(
        project / "slow.ipynb",
        "name = ''",
        "import pathlib, time\npathlib.Path(name).touch()\ntime.sleep(60)",
    )
    quick = write_notebook(project / "quick.ipynb", None, "1")
    assert run_batcat("run", str(quick), "-e", f"{experiment}-start").returncode == 0  # the agent is up
    names = [f"busy{i}" for i in range(len(warm_workers()))]  # one per warm worker, however many
    assert names
    busy = [batcat_nb.submit(str(slow), {"name": n}, experiment=experiment, progress=False) for n in names]
    deadline = time.monotonic() + 60
    while not all((project / n).exists() for n in names):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    waiting = batcat_nb.submit(str(slow), {"name": "waiting"}, experiment=experiment, progress=False)
    waiting.cancel()
    result = waiting.wait()
    assert result.status == "KILLED" and result.reason == "cancelled"
    for handle in busy:
        handle.cancel()
        assert handle.wait().status == "KILLED"
    assert not (project / "waiting").exists()  # it never ran
    assert {r.info.status for r in runs_of(experiment)} == {"KILLED"}
