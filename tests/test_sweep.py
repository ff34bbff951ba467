"""Parameter sweeps: a parent run, one child per combination, resume, failures, concurrency."""

from __future__ import annotations

import pytest
from conftest import run_batcat, write_notebook

pytestmark = pytest.mark.slow

SQUARE = ("x = 1\ny = 0", "import batcat_nb\nbatcat_nb.record('score', (x - 2) ** 2 + y)")


def children(mlflow_client, run) -> list:
    return mlflow_client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
    )


def parent_of(runs_of, experiment):
    return [r for r in runs_of(experiment) if "batcat.sweep.id" in r.data.tags][0]


@pytest.mark.parametrize("agent", ["1", "0"])
def test_grid_sweep_groups_children_under_a_parent_that_records_the_best(
    project, experiment, runs_of, mlflow_client, monkeypatch, agent
):
    monkeypatch.setenv("BATCAT_AGENT", agent)  # warm workers of the agent, or of the sweep itself
    nb = write_notebook(project / "square.ipynb", *SQUARE)
    done = run_batcat(
        "run", str(nb), "-e", experiment, "--grid", "x=1,2,3", "--grid", "y=0,10",
        "--objective", "score", "--minimize",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    parent = parent_of(runs_of, experiment)
    kids = children(mlflow_client, parent)
    assert sorted((k.data.params["x"], k.data.params["y"]) for k in kids) == [
        (x, y) for x in "123" for y in ("0", "10")
    ]
    assert all(k.info.status == "FINISHED" for k in kids)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["batcat.sweep.best.x"] == "2" and parent.data.tags["batcat.sweep.best.y"] == "0"
    assert parent.data.metrics["best.score"] == 0
    best = [k for k in kids if k.info.run_id == parent.data.tags["batcat.sweep.best_run_id"]]
    assert best[0].data.metrics["score"] == 0
    table = done.stdout.splitlines()
    assert "6 run, 0 failed" in table[0]
    assert table[2].split()[:3] == ["FINISHED", "2", "0"]  # best first
    assert table[-1].startswith("best score=0")


def test_failed_combination_does_not_stop_the_others_and_resume_runs_only_what_is_missing(
    project, experiment, runs_of, mlflow_client
):
    nb = write_notebook(project / "nb.ipynb", "x = 1", "assert x != 2, 'two is broken'")
    done = run_batcat("run", str(nb), "-e", experiment, "--grid", "x=1,2,3")
    assert done.returncode == 1
    assert "3 run, 1 failed" in done.stdout and "AssertionError: two is broken" in done.stdout
    parent = parent_of(runs_of, experiment)
    assert parent.info.status == "FAILED"
    assert sorted(k.info.status for k in children(mlflow_client, parent)) == [
        "FAILED",
        "FINISHED",
        "FINISHED",
    ]

    nb.write_text(nb.read_text().replace("assert x != 2, 'two is broken'", "x"))  # the fix
    again = run_batcat("run", str(nb), "-e", experiment, "--grid", "x=1,2,3")
    assert again.returncode == 0, again.stdout
    assert "1 run, 0 failed, 2 already finished" in again.stdout
    assert parent_of(runs_of, experiment).info.status == "FINISHED"

    rerun = run_batcat("run", str(nb), "-e", experiment, "--grid", "x=1,2,3", "--rerun")
    assert "3 run, 0 failed" in rerun.stdout
    assert len(children(mlflow_client, parent)) == 3 + 1 + 3


def test_fail_fast_stops_the_sweep(project, experiment):
    nb = write_notebook(project / "nb.ipynb", "x = 1", "import time\nassert x != 1\ntime.sleep(30)")
    done = run_batcat(
        "run", str(nb), "-e", experiment, "--grid", "x=1,2,3,4", "--max-parallel", "1", "--fail-fast"
    )
    assert done.returncode == 1
    assert "--fail-fast" in done.stdout and "4 run, 4 failed" in done.stdout


def test_sweep_file_with_grid_and_explicit_runs(project, experiment, runs_of, mlflow_client):
    nb = write_notebook(project / "square.ipynb", *SQUARE)
    (project / "sweep.yaml").write_text("grid:\n  x: [1, 3]\nruns:\n  - {x: 2, y: 5}\n")
    done = run_batcat("run", str(nb), "-e", experiment, "--sweep", "sweep.yaml", "-p", "y", "1")
    assert done.returncode == 0, done.stderr
    kids = children(mlflow_client, parent_of(runs_of, experiment))
    assert sorted((k.data.params["x"], k.data.params["y"]) for k in kids) == [
        ("1", "1"),
        ("2", "5"),
        ("3", "1"),
    ]


def test_bad_sweeps_are_one_line_errors(project):
    nb = write_notebook(project / "nb.ipynb", "x = 1")
    for args, message in [
        (["--grid", "x"], "--grid takes NAME=V1,V2"),
        (["--grid", "z=1,2"], "no parameter 'z'"),
        (["--grid", "x=a,b"], "expects int"),
        (["--sweep", "missing.yaml"], "sweep file not found"),
    ]:
        done = run_batcat("run", str(nb), *args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_fifty_concurrent_runs_lose_nothing(
    project, experiment, tracking_uri, mlflow_server, monkeypatch, store
):
    from mlflow.tracking import MlflowClient

    uri = tracking_uri if store == "sqlite" else mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    nb = write_notebook(
        project / "nb.ipynb", "i = 0",
        "import batcat_nb\nbatcat_nb.record('value', i * 2)\nbatcat_nb.record('table', [{'i': i}])",
    )  # fmt: skip
    values = ",".join(str(i) for i in range(50))
    done = run_batcat("run", str(nb), "-e", experiment, "--grid", f"i={values}", "--max-parallel", "8")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id]) if "batcat.sweep.id" not in r.data.tags]
    assert len(runs) == 50
    assert sorted(int(r.data.params["i"]) for r in runs) == list(range(50))
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.metrics["value"] == 2 * int(run.data.params["i"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"nb.ipynb", "nb.html", "batcat-manifest.json", "tables"} <= artifacts
