"""``batcat rerun`` of a Docker run: the same image, by the digest the run recorded; rebuilt when it
is gone and its inputs are unchanged; or built from the run's recorded environment.

The runs here use the session's base image with a one-line requirements file (an old tabulate,
which nothing else installs), so their image shares every layer but the last two with the
session's runner image and a rebuild takes seconds, not minutes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_batcat, write_notebook

import batcat_nb
from batcat_nb import environment

pytestmark = [pytest.mark.docker, pytest.mark.slow]

OLD_TABULATE = "tabulate==0.8.10"  # the index here also has 0.10.0, which `tabulate` resolves to
RECORD_X = "import batcat_nb\nbatcat_nb.record('x', x)"


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
    assert "batcat.image_rebuilt" not in tags
    assert again.result.metrics == {"x": 2.0}


def _docker_run(project: Path, experiment: str, runner: Any) -> tuple[str, Path]:
    """A Docker run of a notebook whose image installs ``OLD_TABULATE``; its id and requirements."""
    requirements = project / "requirements.txt"
    requirements.write_text(f"{OLD_TABULATE}\n")
    notebook = write_notebook(project / "nb.ipynb", "x = 2", RECORD_X)
    options = {"base_image": runner.image.base_image, "requirements": str(requirements)}
    first = batcat_nb.run(
        str(notebook),
        {"x": 3},
        backend="docker",
        backend_options=options,
        experiment=experiment,
        progress=False,
    )
    assert first.ok, first.reason
    return first.run_id, requirements


def _remove_image(engine: Any, digest: str) -> None:
    """``docker rmi`` by id, after untagging: the image is gone for good."""
    image = engine.images.get(digest)
    for tag in image.tags:
        engine.images.remove(tag)
    if any(found.id == digest for found in engine.images.list(all=True)):
        engine.images.remove(digest)
    assert not any(found.id == digest for found in engine.images.list(all=True))


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_rerun_rebuilds_a_removed_image_from_its_unchanged_inputs(
    project, experiment, runner, engine, mlflow_client, runs_of
):
    run_id, _ = _docker_run(project, experiment, runner)
    original = mlflow_client.get_run(run_id).data
    _remove_image(engine, original.tags["batcat.image.digest"])

    again = run_batcat("rerun", run_id, "--no-progress")

    assert again.returncode == 0, again.stdout + again.stderr
    assert "no longer exists; its inputs are unchanged" in again.stderr and "rebuilding it" in again.stderr
    [rerun_run, _] = runs_of(experiment)
    assert rerun_run.info.status == "FINISHED" and rerun_run.data.params == original.params
    tags = rerun_run.data.tags
    assert tags["batcat.rerun_of"] == run_id and tags["batcat.image_rebuilt"] == "true"
    assert tags["batcat.image"] == original.tags["batcat.image"]  # the same content-addressed tag
    assert tags["batcat.image.digest"] != original.tags["batcat.image.digest"]
    assert engine.images.get(tags["batcat.image"]).id == tags["batcat.image.digest"]
    assert rerun_run.data.metrics == {"x": 3.0}


def _environment(mlflow_client: Any, run_id: str, scratch: Path) -> environment.Recorded:
    path = mlflow_client.download_artifacts(run_id, environment.ENVIRONMENT_NAME, str(scratch))
    return environment.recorded(Path(path).read_text(), run_id)


def test_rerun_from_environment_builds_an_image_with_the_recorded_pins(
    project, experiment, runner, mlflow_client, runs_of, tmp_path
):
    run_id, requirements = _docker_run(project, experiment, runner)
    requirements.write_text("tabulate\n")  # the project moved on: its image would have 0.10.0 now
    recorded = _environment(mlflow_client, run_id, tmp_path / "before")
    assert recorded.pins["tabulate"] == "0.8.10"

    again = run_batcat("rerun", run_id, "--backend", "docker", "--from-environment", "--no-progress")

    assert again.returncode == 0, again.stdout + again.stderr
    assert f"building the image from the {len(recorded.pins) - 2} pins of environment.txt" in again.stderr
    assert "left out: batcat-nb (installed from this batcat_nb's source); pip (the image's own)" in (
        again.stderr
    )
    rerun_run = runs_of(experiment)[0]
    assert rerun_run.info.status == "FINISHED", rerun_run.data.tags.get("batcat.reason")
    assert rerun_run.data.tags["batcat.image.from_environment"] == run_id
    rebuilt = _environment(mlflow_client, rerun_run.info.run_id, tmp_path / "after")
    assert rebuilt.python == recorded.python
    assert rebuilt.pins == recorded.pins  # batcat_nb itself is "not from an index" in both

    second = batcat_nb.rerun(run_id, backend="docker", from_environment=True, progress=False)

    assert second.ok, second.result.reason
    tags = mlflow_client.get_run(second.result.run_id).data.tags
    assert tags["batcat.image.digest"] == rerun_run.data.tags["batcat.image.digest"]  # found, not rebuilt
    inputs = json.loads(tags["batcat.image.inputs"])
    assert inputs["requirements_file"].endswith("environment-requirements.txt")
    assert not Path(inputs["requirements_file"]).exists()  # a private scratch file, gone with the run


def test_rerun_of_a_removed_image_whose_requirements_changed_names_them_and_creates_no_run(
    project, experiment, runner, engine, mlflow_client, runs_of
):
    run_id, requirements = _docker_run(project, experiment, runner)
    _remove_image(engine, mlflow_client.get_run(run_id).data.tags["batcat.image.digest"])
    requirements.write_text("tabulate\n")  # the project moved on

    again = run_batcat("rerun", run_id, "--no-progress")

    assert again.returncode == 2, again.stdout + again.stderr
    line = _one_line(again.stderr)
    assert f"run {run_id} ran in image sha256:" in line and "which no longer exists" in line
    assert f"requirements {requirements} changed" in line
    assert "--image IMAGE" in line and "--from-environment" in line
    assert [run.info.run_id for run in runs_of(experiment)] == [run_id]  # no run created

    elsewhere = run_batcat("rerun", run_id, "--image", runner.image.tag, "--no-progress")

    assert elsewhere.returncode == 0, elsewhere.stdout + elsewhere.stderr
    assert runs_of(experiment)[0].data.tags["batcat.image.digest"] == runner.image.digest


def test_rerun_from_environment_for_another_python_names_it_and_the_fix(
    project, experiment, runner, mlflow_client, runs_of, tmp_path
):
    notebook = write_notebook(project / "nb.ipynb", "x = 2", "print(x)")
    first = batcat_nb.run(str(notebook), experiment=experiment, progress=False)
    assert first.ok, first.reason
    other = tmp_path / environment.ENVIRONMENT_NAME
    other.write_text("# python 3.9.18 (CPython, linux)\ntabulate==0.8.10\n")
    mlflow_client.log_artifact(first.run_id, str(other))

    again = run_batcat(
        "rerun", first.run_id, "-b", "docker", "--from-environment", "--base-image", runner.image.base_image
    )

    assert again.returncode == 2, again.stdout + again.stderr
    line = _one_line(again.stderr)
    base = runner.image.base_image
    assert f"run {first.run_id} ran Python 3.9, and base image {base} has Python 3." in line
    assert "pass --base-image IMAGE with Python 3.9" in line
    assert len(runs_of(experiment)) == 1


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        (None, "it recorded no image inputs to rebuild it from"),
        ("{not json", "it recorded no image inputs to rebuild it from"),
        ('{"base_image": 1}', "it recorded no image inputs to rebuild it from"),
        (
            '{"base_image": "127.0.0.1:9/gone:1", "requirements_file": ""}',
            "cannot be rebuilt as it was: base image 127.0.0.1:9/gone:1 (no longer here) changed",
        ),
    ],
)
def test_a_gone_image_without_usable_inputs_is_refused_in_one_line(engine, tmp_path, inputs, problem):
    from batcat_nb.backends.base import RerunImage
    from batcat_nb.backends.docker.rebuild import rerun_image
    from batcat_nb.errors import UsageError

    tags = {"batcat.image.digest": "sha256:" + "0" * 64}
    if inputs is not None:
        tags["batcat.image.inputs"] = inputs

    with pytest.raises(UsageError) as refused:
        rerun_image(engine, RerunImage("r1", tags, {}, None, tmp_path))

    message = str(refused.value)
    assert message.startswith("run r1 ran in image sha256:000000000000, which no longer exists")
    assert problem in message and "\n" not in message
