"""``batcat rerun`` of a Docker run: the same image, by the digest the run recorded."""

from __future__ import annotations

import pytest
from conftest import write_notebook

import batcat_nb

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_rerun_on_docker_uses_the_recorded_image_digest(project, experiment, runner, mlflow_client):
    notebook = write_notebook(project / "nb.ipynb", "x = 2", "import batcat_nb\nbatcat_nb.record('x', x)")
    first = batcat_nb.run(
        str(notebook),
        backend="docker",
        backend_options=runner.options(),
        experiment=experiment,
        progress=False,
    )
    assert first.ok, first.reason
    digest = mlflow_client.get_run(first.run_id).data.tags["batcat.image.digest"]
    assert digest.startswith("sha256:")

    again = batcat_nb.rerun(first.run_id, progress=False)

    assert again.ok, again.result.reason
    tags = mlflow_client.get_run(again.result.run_id).data.tags
    assert tags["batcat.backend"] == "docker" and tags["batcat.rerun_of"] == first.run_id
    assert tags["batcat.image.digest"] == digest and tags["batcat.image"] == digest  # run by digest
    assert again.result.metrics == {"x": 2.0}
