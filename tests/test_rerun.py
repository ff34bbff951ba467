"""``batcat rerun``: a recorded run executed again as it was, against a real kernel and store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import output_notebook, run_batcat, write_notebook

import batcat_nb

pytestmark = pytest.mark.slow

SCORE = "import batcat_nb\nbatcat_nb.record('score', alpha * scale)\nprint('alpha is', alpha)"


def _run_id(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.strip().startswith("mlflow run"):
            return line.split()[2]
    raise AssertionError(f"no run id in:\n{stdout}")


def test_rerun_runs_the_original_notebook_with_its_parameters_and_compares_metrics(
    project, experiment, mlflow_client
):
    notebook = write_notebook(project / "score.ipynb", "alpha = 1.0\nscale = 2", SCORE)
    first = run_batcat("run", str(notebook), "-p", "alpha", "3.5", "-e", experiment)
    assert first.returncode == 0, first.stderr
    original = _run_id(first.stdout)
    write_notebook(notebook, "alpha = 1.0\nscale = 10", "raise ValueError('the edited notebook ran')")

    again = run_batcat("rerun", original)

    assert again.returncode == 0, again.stdout + again.stderr
    rerun_run = mlflow_client.get_run(_run_id(again.stdout))
    assert rerun_run.data.tags["batcat.rerun_of"] == original
    first_run = mlflow_client.get_run(original)
    assert rerun_run.data.tags["batcat.notebook.sha256"] == first_run.data.tags["batcat.notebook.sha256"]
    assert rerun_run.data.params == first_run.data.params  # alpha=3.5 given, scale=2 the old default
    assert rerun_run.data.metrics["score"] == 7.0
    assert "vs original score: equal (7)" in again.stdout
    executed = json.loads(output_notebook(again.stdout).read_text())
    assert "alpha = 3.5" in "".join(executed["cells"][1]["source"])  # injected once, not twice
    assert sum("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"]) == 1


def test_rerun_with_a_parameter_changed_says_how_metrics_moved(project, experiment, mlflow_client):
    notebook = write_notebook(project / "score.ipynb", "alpha = 1.0\nscale = 2", SCORE)
    first = run_batcat("run", str(notebook), "-e", experiment)
    assert first.returncode == 0, first.stderr

    again = run_batcat("rerun", _run_id(first.stdout), "-p", "alpha", "2.5", "--no-progress")

    assert again.returncode == 0, again.stderr
    assert "vs original score: +3 (from 2 to 5)" in again.stdout
    assert mlflow_client.get_run(_run_id(again.stdout)).data.params["alpha"] == "2.5"


def test_rerun_names_the_local_input_that_changed(project, experiment):
    data = project / "data"
    data.mkdir()
    (data / "a.csv").write_text("x\n1\n")
    notebook = write_notebook(
        project / "count.ipynb",
        "data_dir = 'data'",
        "import os, batcat_nb\nbatcat_nb.record('files', len(os.listdir(data_dir)))",
    )
    first = run_batcat("run", str(notebook), "-e", experiment, "--input", f"data={data}")
    assert first.returncode == 0, first.stderr
    (data / "a.csv").write_text("x\n2\n")
    (data / "b.csv").write_text("x\n3\n")

    again = run_batcat("rerun", _run_id(first.stdout), "--no-progress")

    assert again.returncode == 0, again.stderr
    assert "input data changed since: 1 changed (a.csv); 1 added (b.csv)" in again.stdout
    assert "vs original files: +1 (from 1 to 2)" in again.stdout


def test_every_run_records_its_environment_and_input_fingerprint(project, experiment, mlflow_client):
    data = project / "data"
    data.mkdir()
    (data / "a.csv").write_text("x\n1\n")
    notebook = write_notebook(project / "n.ipynb", "data_dir = 'data'", "print(data_dir)")
    done = run_batcat("run", str(notebook), "-e", experiment, "--input", f"data={data}")
    assert done.returncode == 0, done.stderr
    run_id = _run_id(done.stdout)
    tags = mlflow_client.get_run(run_id).data.tags
    assert tags["batcat.input.data.fingerprint"].startswith("sha256:")
    scratch = project / "artifacts"
    environment = Path(mlflow_client.download_artifacts(run_id, "environment.txt", str(scratch))).read_text()
    assert environment.startswith("# python 3.")
    assert "papermill==" in environment and "nbformat==" in environment
    listing = json.loads(
        Path(mlflow_client.download_artifacts(run_id, "batcat-inputs.json", str(scratch))).read_text()
    )
    digest = hashlib.sha256(b"x\n1\n").hexdigest()
    assert listing["data"]["entries"] == [{"path": "a.csv", "size": 4, "sha256": digest}]
    assert listing["data"]["fingerprint"] == tags["batcat.input.data.fingerprint"]


def test_rerun_of_a_run_without_its_records_says_what_is_missing(project, experiment, mlflow_client):
    notebook = write_notebook(project / "n.ipynb", "alpha = 1", "print(alpha)")
    done = run_batcat("run", str(notebook), "-e", experiment)
    run_id = _run_id(done.stdout)
    artifacts = Path(mlflow_client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    (artifacts / "batcat-request.json").unlink()  # as for a run recorded before reruns existed

    again = run_batcat("rerun", run_id)

    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"batcat: error: run {run_id} cannot be re-run: it has no batcat-request.json artifact "
        "(recorded before batcat could re-run runs)"
    )


def test_rerun_of_an_unknown_run_is_one_line(project):
    again = run_batcat("rerun", "0123456789abcdef")
    assert again.returncode == 2
    assert again.stderr.startswith("batcat: error: no run 0123456789abcdef in ")
    assert len(again.stderr.strip().splitlines()) == 1


def test_rerun_reads_the_recorded_versions_of_a_versioned_s3_input(
    project, experiment, bucket, mlflow_client, monkeypatch
):
    import tempfile

    import boto3

    s3 = boto3.client("s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="data/a.txt", Body=b"3")
    s3.put_object(Bucket=bucket, Key="data/sub/b.txt", Body=b"4")
    notebook = write_notebook(
        project / "total.ipynb",
        "data_dir = 'data'",
        "import pathlib, batcat_nb\n"
        "batcat_nb.record('total', sum(int(p.read_text()) for p in pathlib.Path(data_dir).rglob('*.txt')))",
    )
    first = batcat_nb.run(str(notebook), experiment=experiment, inputs={"data": f"s3://{bucket}/data"})
    assert first.ok and first.metrics == {"total": 7.0}
    s3.put_object(Bucket=bucket, Key="data/a.txt", Body=b"30")  # overwritten
    s3.put_object(Bucket=bucket, Key="data/c.txt", Body=b"100")  # added

    temporary = project / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    again = batcat_nb.rerun(first.run_id, progress=False)

    assert again.ok and again.result.metrics == {"total": 7.0}  # the original versions, nothing added
    assert not [p.name for p in temporary.iterdir() if p.name.startswith("batcat-rerun")]  # downloads gone
    assert again.changed_inputs == {}
    assert ("total", "equal (7)") in again.metric_changes()
    scratch = project / "listing"
    listing = json.loads(
        Path(mlflow_client.download_artifacts(first.run_id, "batcat-inputs.json", str(scratch))).read_text()
    )
    assert [(e["Key"], bool(e["VersionId"])) for e in listing["data"]["entries"]] == [
        ("data/a.txt", True),
        ("data/sub/b.txt", True),
    ]


def test_rerun_takes_the_notebook_from_git_when_the_commit_holds_the_same_bytes(
    project, experiment, mlflow_client
):
    import subprocess

    notebook = project / "score.py"
    notebook.write_text('# %% tags=["parameters"]\nalpha = 1.0\nscale = 2\n\n# %%\n' + SCORE + "\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "score.py"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "score"], cwd=project, check=True)
    first = batcat_nb.run(str(notebook), experiment=experiment, progress=False)
    assert first.ok, first.reason
    notebook.write_text(
        '# %% tags=["parameters"]\nalpha = 1.0\nscale = 2\n\n# %%\nraise ValueError("edited")\n'
    )

    again = batcat_nb.rerun(first.run_id, progress=False)

    commit = mlflow_client.get_run(first.run_id).data.tags["mlflow.source.git.commit"]
    assert again.ok and again.notebook_from == f"git {commit[:12]}"
    tags = mlflow_client.get_run(again.result.run_id).data.tags
    assert tags["batcat.rerun.notebook_from"] == f"git {commit[:12]}"
    assert (
        tags["batcat.notebook.sha256"]
        == mlflow_client.get_run(first.run_id).data.tags["batcat.notebook.sha256"]
    )


@pytest.mark.parametrize("function", ["rerun", "sweep", "record", "run", "submit", "inspect"])
def test_the_api_functions_stay_functions_once_every_module_is_imported(function):
    import importlib
    import pkgutil

    import papermill  # noqa: F401  (loads the engine entry point before batcat_nb.engine)

    for module in pkgutil.walk_packages(batcat_nb.__path__, "batcat_nb."):
        if not module.name.startswith("batcat_nb.docker"):
            importlib.import_module(module.name)
    assert callable(getattr(batcat_nb, function)), f"batcat_nb.{function} was replaced by a module"


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_rerun_from_a_hostile_environment_refuses_it_before_anything_runs(
    project, experiment, mlflow_client, runs_of, tmp_path
):
    notebook = write_notebook(project / "score.ipynb", "alpha = 1.0\nscale = 2", SCORE)
    first = batcat_nb.run(str(notebook), experiment=experiment, progress=False)
    assert first.ok, first.reason
    hostile = tmp_path / "environment.txt"  # a shared store: anyone with write access wrote this
    hostile.write_text(
        "# python 3.11.2 (CPython, linux)\ntabulate==0.8.10\n--index-url http://127.0.0.1:9/\n"
    )
    mlflow_client.log_artifact(first.run_id, str(hostile))

    again = run_batcat("rerun", first.run_id, "--backend", "docker", "--from-environment")

    assert again.returncode == 2, again.stdout + again.stderr
    line = _one_line(again.stderr)
    assert f"environment.txt of run {first.run_id} line 3 is not NAME==VERSION: '--index-url" in line
    assert "refusing to build from it" in line
    assert len(runs_of(experiment)) == 1


def test_rerun_from_environment_needs_a_backend_that_builds_images_and_a_recorded_environment(
    project, experiment, mlflow_client, runs_of
):
    notebook = write_notebook(project / "score.ipynb", "alpha = 1.0\nscale = 2", SCORE)
    first = batcat_nb.run(str(notebook), experiment=experiment, progress=False)
    assert first.ok, first.reason

    on_local = run_batcat("rerun", first.run_id, "--from-environment")
    both = run_batcat("rerun", first.run_id, "-b", "docker", "--from-environment", "--image", "x:1")
    base_alone = run_batcat("rerun", first.run_id, "-b", "docker", "--base-image", "x:1")

    assert {on_local.returncode, both.returncode, base_alone.returncode} == {2}, on_local.stderr + both.stderr
    assert "the local backend runs in no image to build from environment.txt" in _one_line(on_local.stderr)
    assert "--image and --from-environment contradict each other" in _one_line(both.stderr)
    assert "--base-image is the base of the image --from-environment builds" in _one_line(base_alone.stderr)
    recorded = Path(mlflow_client.get_run(first.run_id).info.artifact_uri.removeprefix("file://"))
    (recorded / "environment.txt").unlink()  # a run recorded before environments were
    unrecorded = run_batcat("rerun", first.run_id, "-b", "docker", "--from-environment")
    assert unrecorded.returncode == 2
    assert f"run {first.run_id} has no environment.txt artifact" in _one_line(unrecorded.stderr)
    assert len(runs_of(experiment)) == 1
