"""Nothing from a bucket or a job decides where this host writes, or what it sends away.

S3 keys that climb out of their destination are refused (``batcat download``, ``s3://`` inputs,
``storage.download``); links a job leaves in its output are not followed out of it (uploads to
S3, MLflow artifacts).
"""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from aws_fixtures import ROLE, RUNNER_URI, s3_keys
from conftest import run_batcat, write_notebook

from batcat_nb.errors import UnsafePath
from batcat_nb.manifest import Manifest
from batcat_nb.storage import download, upload
from batcat_nb.tracking import Tracker

HOSTILE_KEYS = ["out/../../escaped.txt", "out/sub/../../../escaped.txt", "out//abs/escaped.txt"]


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_download_refuses_a_key_leading_outside_and_writes_nothing(tmp_path, bucket, key):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="out/good.txt", Body=b"good")
    s3.put_object(Bucket=bucket, Key=key, Body=b"planted")
    destination = tmp_path / "a" / "b" / "dest"

    with pytest.raises(UnsafePath) as refused:
        download(f"s3://{bucket}/out", destination, folder=True)

    message = str(refused.value)
    assert f"s3://{bucket}/{key}" in message and "\n" not in message
    assert files_under(tmp_path) == []  # not even the good object: nothing is written


def test_download_keeps_keys_with_dots_that_stay_inside(tmp_path, bucket):
    s3 = boto3.client("s3")
    for key in ("out/a/../b.txt", "out/..x/c.txt", "out/d..txt"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    assert download(f"s3://{bucket}/out", tmp_path, folder=True) == 3
    assert files_under(tmp_path) == ["..x/c.txt", "b.txt", "d..txt"]


def test_upload_never_follows_a_link_out_of_the_output(tmp_path, bucket):
    secret = tmp_path / "home" / "credentials"
    secret.parent.mkdir()
    secret.write_text("aws_secret_access_key = hostile")
    output = tmp_path / "output"
    (output / "sub").mkdir(parents=True)
    (output / "model.txt").write_text("model")
    (output / "x").symlink_to(secret)
    (output / "home").symlink_to(secret.parent, target_is_directory=True)
    (output / "sub" / "up").symlink_to("../../home/credentials")
    (output / "alias.txt").symlink_to("model.txt")  # inside the output: kept

    assert upload(output, f"s3://{bucket}/job") == 2
    assert s3_keys(bucket) == ["job/alias.txt", "job/model.txt"]


def test_completed_run_logs_no_artifact_linked_out_of_the_output(tmp_path):
    secret = tmp_path / "credentials"
    secret.write_text("hostile")
    output = tmp_path / "output"
    (output / "figures").mkdir(parents=True)
    (output / "report.html").write_text("<p>ok</p>")
    (output / "figures" / "plot.svg").write_text("<svg/>")
    (output / "x").symlink_to(secret)
    (output / "figures" / "y").symlink_to(secret)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id, _ = tracker.start_run(experiment="links", run_name="r", params={}, tags={})

    tracker.complete_run(run_id, Manifest(job_name="r", status="FINISHED"), output)

    client = tracker.client
    logged = sorted(a.path for a in client.list_artifacts(run_id)) + sorted(
        a.path for a in client.list_artifacts(run_id, "figures")
    )
    assert logged == ["figures", "report.html", "figures/plot.svg"]


def test_batcat_download_refuses_a_job_output_key_leading_outside(tmp_path, bucket, aws_env):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="jobs/j1/output/notebook/run.ipynb", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="jobs/j1/output/notebook/../../../../../planted.txt", Body=b"x")
    boto3.client("sagemaker").create_processing_job(
        ProcessingJobName="hostile-output",
        RoleArn=ROLE,
        AppSpecification={"ImageUri": RUNNER_URI},
        ProcessingResources={
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.t3.medium", "VolumeSizeInGB": 1}
        },
        ProcessingOutputConfig={
            "Outputs": [
                {
                    "OutputName": "notebook",
                    "S3Output": {
                        "S3Uri": f"s3://{bucket}/jobs/j1/output/notebook",
                        "LocalPath": "/opt/ml/processing/output/notebook",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
    )
    work = tmp_path / "deep" / "er" / "work"
    work.mkdir(parents=True)

    done = run_batcat("download", "hostile-output", "-o", "got", cwd=work, env={**os.environ})

    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "jobs/j1/output/notebook/../../../../../planted.txt" in done.stderr
    assert files_under(tmp_path) == []


def test_local_run_refuses_an_s3_input_key_leading_outside(tmp_path, project, bucket, aws_env):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="data/part.csv", Body=b"a\n1\n")
    planted = f"data/../../../../../../../{tmp_path.relative_to('/')}/planted.txt"
    s3.put_object(Bucket=bucket, Key=planted, Body=b"x")
    notebook = write_notebook(project / "nb.ipynb", None, "print('ran')")

    done = run_batcat("run", str(notebook), "--input", f"data=s3://{bucket}/data", "--no-progress")

    assert done.returncode == 2, done.stderr
    assert planted in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "planted.txt").exists()
