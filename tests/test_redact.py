"""Credentials inside URIs are masked wherever a URI is shown or stored (redact.mask_uri)."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import free_port, run_batcat, write_notebook

from batcat_nb.redact import Masker, looks_secret, mask_uri, without_credentials

PASSWORD = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://alice:s3cr3t@mlflow.example:5000", "http://alice:***@mlflow.example:5000"),
        ("https://ghp_abcdef@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("https://x-access-token:ghp_abc@github.com/o/r", "https://x-access-token:***@github.com/o/r"),
        ("postgresql://ml:pw@db:5432/mlflow", "postgresql://ml:***@db:5432/mlflow"),
        ("mysql+pymysql://ml:p%40ss@db/mlflow?charset=utf8", "mysql+pymysql://ml:***@db/mlflow?charset=utf8"),
        ("postgresql://db/mlflow?user=ml&password=pw", "postgresql://db/mlflow?user=ml&password=***"),
        ("ssh://git@github.com/o/r.git", "ssh://git@github.com/o/r.git"),  # a user, no credential
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("sqlite:////home/u/mlflow.db", "sqlite:////home/u/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        (
            "store http://a:b@h1 is down, try https://c:d@h2/x",
            "store http://a:***@h1 is down, try https://c:***@h2/x",
        ),
    ],
)
def test_credentials_in_uris_are_masked_and_the_rest_kept(uri, shown):
    assert mask_uri(uri) == shown


def test_stored_uris_lose_their_credentials():
    assert without_credentials("http://alice:pw@host:5000/") == "http://host:5000/"
    assert without_credentials("https://tok@host") == "https://host"
    assert without_credentials("ssh://git@host/r") == "ssh://git@host/r"


def test_secret_names_and_values():
    assert all(
        map(looks_secret, ["api_token", "password", "DB_PASSWORD", "api_key", "secret", "aws_secret_key"])
    )
    assert not any(map(looks_secret, ["alpha", "tokenizer", "max_tokens", "author", "keyword"]))
    assert Masker(["abc", "abcdef"]).text("x abcdef abc") == "x *** ***"
    assert Masker(["v"]).data({"a": ["v1", {"b": "v"}]}) == {"a": ["***1", {"b": "***"}]}


def test_unreachable_tracking_server_error_hides_its_password(project):
    notebook = write_notebook(project / "nb.ipynb", "x = 1", "x")
    uri = f"http://alice:{PASSWORD}@127.0.0.1:{free_port()}"

    done = run_batcat("run", str(notebook), "--tracking-uri", uri)

    assert done.returncode != 0
    assert "http://alice:***@127.0.0.1" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_run_against_a_server_with_credentials_shows_and_stores_none(project, experiment, mlflow_server):
    """A real tracking server reached with user:password in its URI; a git remote with a token."""
    from mlflow.tracking import MlflowClient

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)

    git("init", "-q")
    git("remote", "add", "origin", f"https://x-access-token:{PASSWORD}@github.com/o/r.git")
    notebook = write_notebook(project / "nb.ipynb", "x = 1", "x")
    git("add", "nb.ipynb")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "nb")
    uri = mlflow_server.replace("http://", f"http://alice:{PASSWORD}@")

    done = run_batcat("run", str(notebook), "-e", experiment, "--tracking-uri", uri)

    assert done.returncode == 0, done.stderr
    assert "http://alice:***@127.0.0.1" in done.stdout  # the run's link, masked
    assert PASSWORD not in done.stdout + done.stderr
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.data.tags["mlflow.source.git.repoURL"] == "https://x-access-token:***@github.com/o/r.git"
    assert not [k for k, v in {**run.data.tags, **run.data.params}.items() if PASSWORD in v]


def test_result_summaries_and_repr_mask_the_store(project, experiment, tracking_uri):
    import batcat_nb

    notebook = write_notebook(project / "nb.ipynb", "x = 1", "x")
    result = batcat_nb.run(str(notebook), experiment=experiment, progress=False)
    result.tracking_uri = f"postgresql://ml:{PASSWORD}@db/mlflow"  # as a database store would be

    shown = [str(result), result._repr_html_(), repr(result), str(result.to_dict())]

    assert not [text for text in shown if PASSWORD in text]
    assert "postgresql://ml:***@db/mlflow" in str(result)


def test_sagemaker_job_tag_holds_the_store_without_credentials_and_download_reconnects(
    project, options, bucket, experiment, fake_sagemaker, mlflow_server, monkeypatch
):
    from mlflow.tracking import MlflowClient

    from batcat_nb import api, contract
    from batcat_nb.backends.sagemaker import jobs as sagemaker_jobs
    from batcat_nb.spec import RunRequest

    uri = mlflow_server.replace("http://", f"http://alice:{PASSWORD}@")
    notebook = write_notebook(project / "nb.ipynb", "x = 1", "x")
    request = RunRequest(
        notebook=str(notebook),
        backend="sagemaker",
        experiment=experiment,
        tracking_uri=uri,
        backend_options=dict(options),
        progress=False,
    )

    result = api.run(request)

    assert result.status == "FINISHED", result.reason
    tags = {t["Key"]: t["Value"] for t in fake_sagemaker.requests[result.job_name]["Tags"]}
    assert tags[contract.JOB_TAG_TRACKING_URI] == mlflow_server
    sent = json.dumps(fake_sagemaker.requests[result.job_name])
    assert PASSWORD not in sent + json.dumps(sagemaker_jobs.describe_job(result.job_name), default=str)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the user's own credentials reconnect
    assert sagemaker_jobs.tracking_uri(tags) == uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert sagemaker_jobs.tracking_uri(tags) == mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    download = run_batcat("download", result.job_name, "-o", "again")
    assert download.returncode == 0, download.stderr
    assert PASSWORD not in download.stdout + download.stderr
    assert MlflowClient(mlflow_server).get_run(result.run_id).info.status == "FINISHED"
