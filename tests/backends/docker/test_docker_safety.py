"""What a container job stages on this host is private, and what it leaves cannot reach the host.

The host side of ``/opt/ml`` lives in a 0700 folder; a link in an output is not followed out of
it when the outputs are collected; an S3 input whose key climbs out is refused.
"""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

import boto3
import pytest
from conftest import write_notebook
from test_docker_container import request_for

import batcat_nb
from batcat_nb.backends.docker.container import run_request
from batcat_nb.contract import file_uri

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Leaves a file and three links in each output: to a host file, to a host folder, inside.
PLANT_LINKS = """
import os, pathlib, sys
for out in pathlib.Path("/opt/ml/processing/output").iterdir():
    (out / "ok.txt").write_text("ok")
    os.symlink(sys.argv[1], out / "x")
    os.symlink(os.path.dirname(sys.argv[1]), out / "home")
    os.symlink("ok.txt", out / "alias.txt")
print("planted", flush=True)
"""


def modes_of(prefix: str) -> list[int]:
    return [stat.S_IMODE(p.stat().st_mode) for p in Path(tempfile.gettempdir()).glob(f"{prefix}*")]


def test_outputs_are_collected_without_following_links_out_and_staged_privately(
    tmp_path, runner, engine, s3_bucket
):
    secret = tmp_path / "home" / "credentials"
    secret.parent.mkdir()
    secret.write_text("aws_secret_access_key = hostile")
    copied = tmp_path / "copied"
    request = request_for(
        runner, PLANT_LINKS, inputs={}, outputs={"report": file_uri(copied), "sent": f"s3://{s3_bucket}/out"}
    )
    request["AppSpecification"]["ContainerArguments"] = [str(secret)]
    staged: list[list[int]] = []  # the host staging folders' modes, seen while the job runs
    prefix = f"batcat-{request['ProcessingJobName']}-"

    outcome = run_request(request, on_log=lambda line: staged.append(modes_of(prefix)))

    assert outcome.status == "Completed", outcome.failure_reason
    assert staged and staged[0] == [0o700]
    assert sorted(p.name for p in copied.iterdir()) == ["alias.txt", "ok.txt"]
    assert not any(p.is_symlink() for p in copied.iterdir())
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert sorted(keys) == ["out/alias.txt", "out/ok.txt"]


def test_s3_input_key_leading_outside_fails_the_job_naming_it(tmp_path, runner, engine, s3_bucket):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="in/ok.csv", Body=b"a\n")
    s3.put_object(Bucket=s3_bucket, Key="in/../../../../../../planted.txt", Body=b"x")
    request = request_for(runner, "print('ran')", inputs={"data": f"s3://{s3_bucket}/in"}, outputs={})

    outcome = run_request(request)

    assert outcome.status == "Failed"
    assert f"s3://{s3_bucket}/in/../../../../../../planted.txt" in outcome.failure_reason
    assert not Path("/planted.txt").exists()


def test_docker_job_folder_holding_the_parameters_is_private(project, experiment, runner):
    notebook = write_notebook(project / "nb.ipynb", "token = 'x'", "print(token)")

    handle = batcat_nb.submit(
        str(notebook),
        parameters={"token": "for this user only"},
        experiment=experiment,
        backend="docker",
        backend_options={"image": runner.image.tag},
    )
    mode = stat.S_IMODE(handle.job_dir.stat().st_mode)
    result = handle.wait()

    assert mode == 0o700
    assert result.status == "FINISHED", result.reason
