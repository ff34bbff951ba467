"""Every value the OS allows in the environment reaches the job's kernel: an emoji in a CI
commit message must not cost the job its MLflow run, its records file or its job marker."""

from __future__ import annotations

import pytest
from conftest import run_batcat, write_notebook

pytestmark = pytest.mark.slow

MESSAGE = "fix 🐛 in the loader — ça marche"

CHECKS = (
    "import os, mlflow\n"
    "assert os.environ['CI_COMMIT_MESSAGE'] == " + repr(MESSAGE) + "\n"
    "assert os.environ['BATCAT_IN_JOB'] and os.environ['BATCAT_RECORDS_FILE']\n"
    "mlflow.log_metric('seen', 1)"
)


def test_an_emoji_in_the_environment_reaches_the_kernel_with_the_jobs_own_variables(
    project, experiment, runs_of, monkeypatch
):
    """Through the agent, whose kernels receive the caller's whole environment."""
    nb = write_notebook(project / "nb.ipynb", None, CHECKS)
    monkeypatch.setenv("CI_COMMIT_MESSAGE", MESSAGE)
    done = run_batcat("run", str(nb), "-e", experiment, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    [run] = runs_of(experiment)
    assert run.info.status == "FINISHED" and run.data.metrics == {"seen": 1.0}
