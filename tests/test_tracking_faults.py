"""The tracking store as users really give it and as it really behaves: a relative SQLite URI,
a store that is locked for a moment, a store that stays away."""

from __future__ import annotations

import pytest
from conftest import run_batcat, write_notebook

pytestmark = pytest.mark.slow

LOGS_A_METRIC = "import mlflow\nmlflow.log_metric('answer', 42)"


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []


@pytest.mark.parametrize("given", ["option", "environment"])
def test_a_relative_sqlite_uri_is_the_callers_store_for_the_run_and_the_notebook(
    project, experiment, agents, monkeypatch, given
):
    nb = write_notebook(project / "nb.ipynb", None, LOGS_A_METRIC)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    args = ["run", str(nb), "-e", experiment]
    if given == "option":
        args += ["--tracking-uri", "sqlite:///stores/mlflow.db"]
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///stores/mlflow.db")
    done = run_batcat(*args, cwd=project)  # through the agent, which runs in its own folder
    assert done.returncode == 0, done.stderr
    [run] = _runs(f"sqlite:///{project / 'stores' / 'mlflow.db'}")
    assert run.info.status == "FINISHED" and run.data.metrics == {"answer": 42.0}
    assert not list(agents.rglob("*.db"))  # nothing landed in the agent's folder
