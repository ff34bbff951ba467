"""CreateProcessingJob failing on AWS's side, over real HTTP (a proxy in front of moto answers
500 InternalServerError): submitted again under ``--retries``, never as a second job, and one
line without them."""

from __future__ import annotations

import pytest
from conftest import run_batcat, write_notebook

import batcat_nb
from batcat_nb import api
from batcat_nb.spec import RunRequest

pytestmark = pytest.mark.slow

CREATE = "CreateProcessingJob"
RECORD_X = ("x = 1", "import batcat_nb\nbatcat_nb.record('x', x)")


def _request(notebook, options, experiment, retries):
    return RunRequest(
        notebook=str(notebook), backend="sagemaker", experiment=experiment,
        backend_options=dict(options, poll_interval=0.3), retries=retries, progress=False,
    )  # fmt: skip


def test_a_create_that_keeps_failing_is_submitted_again_under_the_same_run(
    project, experiment, options, faulty_sagemaker, fake_sagemaker, mlflow_client
):
    faulty_sagemaker.fail(CREATE, 2)  # botocore's two attempts
    notebook = write_notebook(project / "nb.ipynb", *RECORD_X)

    result = api.run(_request(notebook, options, experiment, retries=1))

    assert result.status == "FINISHED" and result.metrics == {"x": 1.0}
    assert list(fake_sagemaker.requests) == [result.job_name] and result.job_name.endswith("-a2")
    assert faulty_sagemaker.failed == [CREATE, CREATE]
    tags = mlflow_client.get_run(result.run_id).data.tags
    assert tags["batcat.attempt"] == "2"
    assert "InternalServerError" in tags["batcat.attempt.1.reason"]


def test_a_500_after_the_job_was_created_follows_that_job_never_a_second(
    project, experiment, options, faulty_sagemaker, fake_sagemaker, mlflow_client
):
    faulty_sagemaker.fail(CREATE, 1, after_forwarding=True)  # created, then 500; botocore retries
    notebook = write_notebook(project / "nb.ipynb", *RECORD_X)

    result = api.run(_request(notebook, options, experiment, retries=0))

    assert result.status == "FINISHED" and result.metrics == {"x": 1.0}
    assert faulty_sagemaker.calls.count(CREATE) == 2  # the retry was refused: the name is taken
    assert list(fake_sagemaker.requests) == [result.job_name]
    assert mlflow_client.get_run(result.run_id).data.tags["batcat.attempt"] == "1"


@pytest.mark.parametrize("how", [(), ("--no-wait", "--retries", "1")], ids=["no-retries", "no-wait"])
def test_a_failed_create_nothing_submits_again_is_one_line_and_leaves_nothing_running(
    project, experiment, sagemaker_env, faulty_sagemaker, runs_of, how
):
    faulty_sagemaker.fail(CREATE, 2)
    notebook = write_notebook(project / "nb.ipynb", *RECORD_X)

    done = run_batcat("run", str(notebook), "-b", "sagemaker", "-e", experiment, "--no-progress", *how)

    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    [error] = [line for line in lines if "error" in line]
    assert error.startswith("batcat: error: creating nb-") and "InternalServerError" in error
    assert "Traceback" not in done.stderr
    assert [r.info.status for r in runs_of(experiment)] == ["FAILED"]
    assert sagemaker_env.requests == {}


def test_a_sweep_child_whose_create_failed_is_submitted_again(
    project, experiment, options, faulty_sagemaker, fake_sagemaker, runs_of
):
    faulty_sagemaker.fail(CREATE, 2)  # the first child's
    notebook = write_notebook(project / "nb.ipynb", *RECORD_X)

    swept = batcat_nb.sweep(
        str(notebook), {"x": [1, 2]}, experiment=experiment, backend="sagemaker", max_parallel=1,
        backend_options=dict(options, poll_interval=0.3), retries=1, progress=False,
    )  # fmt: skip

    assert swept.ok, str(swept)
    children = [r for r in runs_of(experiment) if "mlflow.parentRunId" in r.data.tags]
    assert sorted((c.data.params["x"], c.data.tags["batcat.attempt"]) for c in children) == [
        ("1", "2"),
        ("2", "1"),
    ]
    assert len(fake_sagemaker.requests) == 2


def test_describe_failing_on_aws_side_is_ridden_out(
    project, experiment, options, faulty_sagemaker, mlflow_client
):
    faulty_sagemaker.fail("DescribeProcessingJob", 3)  # more than botocore's attempts
    notebook = write_notebook(project / "nb.ipynb", *RECORD_X)

    result = api.run(_request(notebook, options, experiment, retries=0))

    assert result.status == "FINISHED" and result.metrics == {"x": 1.0}
    assert faulty_sagemaker.failed == ["DescribeProcessingJob"] * 3
    assert mlflow_client.get_run(result.run_id).data.tags["batcat.attempt"] == "1"
