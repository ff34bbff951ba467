"""The worker records its own MLflow run only for a job with no launcher (a deployed workflow's step,
tested end to end in tests/workflow/test_workflow_aws.py); a launcher's job never gets a second run."""

from __future__ import annotations

import pytest
from conftest import write_notebook

import batcat_nb

pytestmark = pytest.mark.slow


def test_a_local_job_whose_environment_names_the_store_gets_only_its_launchers_run(
    project, experiment, runs_of, monkeypatch
):
    monkeypatch.setenv("BATCAT_AGENT", "0")  # the one-shot worker, its run id sent on stdin
    nb = write_notebook(project / "nb.ipynb", None, "import mlflow\nmlflow.log_metric('m', 1)")
    result = batcat_nb.run(str(nb), experiment=experiment, progress=False)
    assert result.ok, result
    runs = runs_of(experiment)
    assert [r.info.run_id for r in runs] == [result.run_id]
    assert runs[0].data.metrics["m"] == 1.0


def test_start_creates_a_tagged_run_only_when_the_environment_names_no_run(
    project, experiment, tracking_uri, mlflow_client
):
    from batcat_nb import job_run

    job = {"job_name": "sales-left-0-abc", "kernel": "python3", "recorded_parameters": {"label": "L"}}
    env = job_run.workflow_env(tracking_uri, experiment, "left", "exec-1")
    assert job_run.start(job, {**env, "MLFLOW_RUN_ID": "0" * 32}) is None
    assert job_run.start(job, {}) is None
    own = job_run.start(job, env)
    assert own is not None and own.env["MLFLOW_RUN_ID"] == own.run_id
    run = mlflow_client.get_run(own.run_id)
    assert run.info.run_name == "left" and run.data.params == {"label": "L"}
    assert run.data.tags["batcat.workflow.execution"] == "exec-1"
    assert run.data.tags["batcat.workflow.step_run"] == "exec-1/left"
    assert mlflow_client.get_experiment(run.info.experiment_id).name == experiment
