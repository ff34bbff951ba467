"""``run_request``: a CreateProcessingJob request run in a real container."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from docker_fixtures import job_containers

from batcat_nb.backends.docker.container import run_request
from batcat_nb.contract import build_request, file_uri, job_config

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# What a container sees, written to its "notebook" output (uploaded as written, so also after a
# failure); then a message and exit code 3.
INSPECT = """
import json, os, pathlib, socket, stat, sys
ml = pathlib.Path("/opt/ml")
def owner_mode(path):
    info = path.stat()
    return [info.st_uid, oct(stat.S_IMODE(info.st_mode))]
inputs = ml / "processing" / "input"
seen = {
    "hostname": socket.gethostname(),
    "uid": os.getuid(),
    "job": json.loads((ml / "config" / "processingjobconfig.json").read_text()),
    "resources": json.loads((ml / "config" / "resourceconfig.json").read_text()),
    "inputs": sorted(str(p.relative_to(inputs)) for p in inputs.rglob("*") if p.is_file()),
    "greeting": os.environ.get("GREETING"),
    "secret": os.environ.get("SECRET_TOKEN"),
    "platform_folders": {
        str(path.relative_to(ml)): owner_mode(path)
        for path in [ml / "config", ml / "output", *(ml / "processing" / "input").iterdir(),
                     *(ml / "processing" / "output").iterdir()]
    },
    "interfaces": sorted(os.listdir("/sys/class/net")),
}
(ml / "processing" / "output" / "notebook" / "seen.json").write_text(json.dumps(seen))
(ml / "processing" / "output" / "copy" / "kept.txt").write_text("only if the job completes")
(ml / "output" / "message").write_text("first line of the reason\\n" + "x" * 2000)
print("line one")
print("line two", flush=True)
sys.exit(3)
"""


def request_for(runner, script: str, inputs: dict, outputs: dict, **kwargs) -> dict:
    request = build_request(
        SimpleNamespace(job_name=f"contract-{int(time.time() * 1000)}"),
        image=runner.image.tag,
        inputs=inputs,
        outputs=outputs,
        environment={"GREETING": "hello"},
        **kwargs,
    )
    request["AppSpecification"]["ContainerEntrypoint"] = ["python", "-c", script]
    return request


def test_container_sees_exactly_the_processing_contract(tmp_path, runner, engine, s3_bucket):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="in/data/part-1.csv", Body=b"a,b\n1,2\n")
    s3.put_object(Bucket=s3_bucket, Key="in/data/nested/part-2.csv", Body=b"a,b\n3,4\n")
    local = tmp_path / "local"
    local.mkdir()
    (local / "b.txt").write_text("b")
    copied = tmp_path / "copied"
    request = request_for(
        runner,
        INSPECT,
        inputs={"data": f"s3://{s3_bucket}/in/data", "local": file_uri(local)},
        outputs={"notebook": f"s3://{s3_bucket}/out/notebook", "copy": file_uri(copied)},
    )
    lines: list[str] = []
    outcome = run_request(request, on_log=lines.append, extra_env={"SECRET_TOKEN": "s3cr3t"})

    assert outcome.status == "Failed" and outcome.exit_code == 3
    assert outcome.exit_message.startswith("first line of the reason\nxxx")
    assert len(outcome.exit_message) == 1024  # SageMaker keeps the first KB
    assert outcome.failure_reason == "AlgorithmError: first line of the reason"
    assert lines[-2:] == ["line one", "line two"]
    body = s3.get_object(Bucket=s3_bucket, Key="out/notebook/seen.json")["Body"].read()
    seen = json.loads(body)  # uploaded although the job failed: a Continuous output
    assert not copied.exists()  # an EndOfJob output of a failed job: nothing promises it
    assert seen["hostname"] == "algo-1"
    assert seen["uid"] == 0  # the image's USER: root, as SageMaker runs it (the worker drops to batcat)
    # every folder the platform makes is root's and 0755, as SageMaker makes them
    assert seen["platform_folders"] == {
        path: [0, "0o755"]
        for path in (
            "config",
            "output",
            "processing/input/data",
            "processing/input/local",
            "processing/output/notebook",
            "processing/output/copy",
        )
    }
    assert seen["interfaces"] == ["eth0", "lo"]  # a network of its own (Docker's bridge), not the host's
    assert seen["inputs"] == ["data/nested/part-2.csv", "data/part-1.csv", "local/b.txt"]
    assert seen["greeting"] == "hello" and seen["secret"] == "s3cr3t"
    job = seen["job"]
    assert job["ProcessingJobName"] == request["ProcessingJobName"]
    assert job["ProcessingJobArn"].endswith(f":processing-job/{request['ProcessingJobName']}")
    assert job["RoleArn"] == request["RoleArn"] and job["StoppingCondition"] == request["StoppingCondition"]
    assert job["Environment"] == {"GREETING": "hello"}  # credentials never reach the job's config
    assert seen["resources"] == {"current_host": "algo-1", "hosts": ["algo-1"]}
    assert job_containers(engine) == []


def test_job_config_has_every_field_the_platform_fills_in():
    request = build_request(
        SimpleNamespace(job_name="filled-in"),
        image="batcat-runner:x",
        inputs={"data": "s3://b/in"},
        outputs={"notebook": "s3://b/nb", "report": "s3://b/out"},
        environment={},
    )
    config = job_config(request)
    assert config["AppSpecification"] == {
        "ImageUri": "batcat-runner:x",
        "ContainerEntrypoint": ["python", "-m", "batcat_nb.worker"],
        "ContainerArguments": None,
    }
    assert config["ProcessingInputs"][0] == {
        "InputName": "data",
        "AppManaged": False,
        "S3Input": {
            "LocalPath": "/opt/ml/processing/input/data",
            "S3Uri": "s3://b/in",
            "S3DataDistributionType": "FullyReplicated",
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3CompressionType": "None",
            "S3DownloadMode": "StartOfJob",
        },
        "DatasetDefinition": None,
    }
    outputs = config["ProcessingOutputConfig"]
    assert outputs["KmsKeyId"] is None
    assert [o["S3Output"]["S3UploadMode"] for o in outputs["Outputs"]] == ["Continuous", "EndOfJob"]
    assert all(o["AppManaged"] is False and o["FeatureStoreOutput"] is None for o in outputs["Outputs"])
    assert config["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] is None
    assert config["NetworkConfig"] == {
        "EnableInterContainerTrafficEncryption": False,
        "EnableNetworkIsolation": False,
        "VpcConfig": None,
    }


def test_network_isolation_leaves_the_container_without_a_network(tmp_path, runner):
    script = (
        "import os, pathlib\n"
        "net = ' '.join(sorted(os.listdir('/sys/class/net')))\n"
        "pathlib.Path('/opt/ml/processing/output/notebook/net').write_text(net)"
    )
    request = request_for(runner, script, inputs={}, outputs={"notebook": file_uri(tmp_path)})
    request["NetworkConfig"] = {"EnableNetworkIsolation": True}
    outcome = run_request(request, network_mode="host")  # the request wins over the caller
    assert outcome.status == "Completed", outcome.failure_reason
    assert (tmp_path / "net").read_text() == "lo"


def test_outputs_handed_back_belong_to_the_host_user(tmp_path, runner):
    script = (
        "import os, pathlib\n"
        "out = pathlib.Path('/opt/ml/processing/output/out/sub/r.txt')\n"
        "out.parent.mkdir(); out.write_text('mine')\n"
        "for path in (out, out.parent): os.chown(path, 4321, 4321)"  # someone else's, in the container
    )
    request = request_for(runner, script, inputs={}, outputs={"out": file_uri(tmp_path / "out")})
    outcome = run_request(request)
    assert outcome.status == "Completed", outcome.failure_reason
    for path in (tmp_path / "out" / "sub", tmp_path / "out" / "sub" / "r.txt"):
        assert path.stat().st_uid == os.getuid(), path


def test_stop_sends_sigint_then_sigkill_and_still_collects_the_continuous_output(tmp_path, runner, engine):
    import threading

    script = (
        "import pathlib, signal, time\n"
        "out = pathlib.Path('/opt/ml/processing/output/notebook/partial.txt')\n"
        "out.write_text('so far')\n"
        "def note(signum, frame):\n"  # records the signal, then goes on: only SIGKILL ends it
        "    out.write_text(signal.Signals(signum).name)\n"
        "signal.signal(signal.SIGINT, note)\n"
        "signal.signal(signal.SIGTERM, note)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    stop = threading.Event()
    request = request_for(runner, script, inputs={}, outputs={"notebook": file_uri(tmp_path / "out")})

    def on_log(line: str) -> None:
        if line == "ready":
            stop.set()

    outcome = run_request(request, on_log=on_log, stop=stop, stop_grace=1)
    assert outcome.status == "Stopped" and outcome.failure_reason == "stopped by request"
    assert outcome.exit_code == 137  # SIGKILL once the grace ran out, not the end of the sleep
    assert (tmp_path / "out" / "partial.txt").read_text() == "SIGINT"  # what Processing sends
    assert job_containers(engine) == []


def test_max_runtime_stops_the_job(tmp_path, runner):
    request = request_for(runner, "import time; time.sleep(300)", inputs={}, outputs={}, max_runtime=2)
    outcome = run_request(request, stop_grace=1)
    assert outcome.status == "Stopped"
    assert outcome.failure_reason == "MaxRuntimeInSeconds (2s) exceeded"


def test_missing_image_and_missing_input_fail_before_a_container_runs(tmp_path, runner, engine):
    request = request_for(runner, "pass", inputs={}, outputs={})
    request["AppSpecification"]["ImageUri"] = "batcat-no-such-image:1"
    outcome = run_request(request)
    assert outcome.status == "Failed" and "image batcat-no-such-image:1 not found" in outcome.failure_reason
    request = request_for(runner, "pass", inputs={"gone": file_uri(tmp_path / "gone")}, outputs={})
    outcome = run_request(request)
    assert outcome.status == "Failed" and f"{tmp_path / 'gone'} does not exist" in outcome.failure_reason
    assert job_containers(engine) == []


def test_successful_job_is_completed_and_copies_its_outputs(tmp_path, runner):
    script = "import pathlib; pathlib.Path('/opt/ml/processing/output/out/sub/r.txt').parent.mkdir(); " + (
        "pathlib.Path('/opt/ml/processing/output/out/sub/r.txt').write_text('done')"
    )
    destination = tmp_path / "results"
    request = request_for(runner, script, inputs={}, outputs={"out": file_uri(destination)})
    outcome = run_request(request)
    assert (outcome.status, outcome.exit_code, outcome.failure_reason) == ("Completed", 0, None)
    assert (destination / "sub" / "r.txt").read_text() == "done"
    assert Path(destination).is_dir()
