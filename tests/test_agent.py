"""The batcat agent: warm starts that still give every job a fresh kernel in the caller's world."""

from __future__ import annotations

import time

import pytest
from conftest import run_batcat, write_notebook

pytestmark = pytest.mark.slow


def agent_pids() -> list[str]:
    done = run_batcat("agent", "status")
    return [line.split()[2] for line in done.stdout.splitlines() if " pid " in line]


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
