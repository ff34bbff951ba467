"""``run_request``: a CreateProcessingJob request run in a real container."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from docker_fixtures import job_containers

from batcat_nb.backends.docker.container import run_request
from batcat_nb.contract import build_request, file_uri

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# What a container sees, written to its "report" output; then a message and exit code 3.
INSPECT = """
import json, os, pathlib, socket, sys
ml = pathlib.Path("/opt/ml")
inputs = ml / "processing" / "input"
try:
    (inputs / "local" / "new.txt").write_text("x")
    writable = True
except OSError:
    writable = False
seen = {
    "hostname": socket.gethostname(),
    "uid": os.getuid(),
    "job": json.loads((ml / "config" / "processingjobconfig.json").read_text()),
    "resources": json.loads((ml / "config" / "resourceconfig.json").read_text()),
    "inputs": sorted(str(p.relative_to(inputs)) for p in inputs.rglob("*") if p.is_file()),
    "local_input_writable": writable,
    "greeting": os.environ.get("GREETING"),
    "secret": os.environ.get("SECRET_TOKEN"),
}
(ml / "processing" / "output" / "report" / "seen.json").write_text(json.dumps(seen))
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
        outputs={"report": f"s3://{s3_bucket}/out/report", "copy": file_uri(copied)},
    )
    lines: list[str] = []
    outcome = run_request(request, on_log=lines.append, extra_env={"SECRET_TOKEN": "s3cr3t"})

    assert outcome.status == "Failed" and outcome.exit_code == 3
    assert outcome.exit_message.startswith("first line of the reason\nxxx")
    assert len(outcome.exit_message) == 1024  # SageMaker keeps the first KB
    assert outcome.failure_reason == "AlgorithmError: first line of the reason"
    assert lines[-2:] == ["line one", "line two"]
    body = s3.get_object(Bucket=s3_bucket, Key="out/report/seen.json")["Body"].read()
    seen = json.loads(body)  # uploaded although the job failed (EndOfJob)
    assert seen["hostname"] == "algo-1"
    assert seen["uid"] == 1000  # the image's non-root user
    assert seen["inputs"] == ["data/nested/part-2.csv", "data/part-1.csv", "local/b.txt"]
    assert seen["local_input_writable"] is False
    assert seen["greeting"] == "hello" and seen["secret"] == "s3cr3t"
    job = seen["job"]
    assert job["ProcessingJobName"] == request["ProcessingJobName"]
    assert job["ProcessingJobArn"].endswith(f":processing-job/{request['ProcessingJobName']}")
    for key in ("AppSpecification", "ProcessingInputs", "ProcessingOutputConfig", "ProcessingResources"):
        assert job[key] == request[key], key
    assert job["RoleArn"] == request["RoleArn"] and job["StoppingCondition"] == request["StoppingCondition"]
    assert job["Environment"] == {"GREETING": "hello"}  # credentials never reach the job's config
    assert seen["resources"] == {"current_host": "algo-1", "hosts": ["algo-1"]}
    assert job_containers(engine) == []


def test_stop_sends_sigterm_then_sigkill_and_still_collects_outputs(tmp_path, runner, engine):
    import threading

    script = (
        "import pathlib, signal, time\n"
        "out = pathlib.Path('/opt/ml/processing/output/out')\n"
        "(out / 'partial.txt').write_text('so far')\n"
        # records SIGTERM and carries on: only the SIGKILL after the grace ends it
        "signal.signal(signal.SIGTERM, lambda *_: (out / 'signals.txt').write_text('SIGTERM'))\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    stop = threading.Event()
    request = request_for(runner, script, inputs={}, outputs={"out": file_uri(tmp_path / "out")})

    def on_log(line: str) -> None:
        if line == "ready":
            stop.set()

    outcome = run_request(request, on_log=on_log, stop=stop, stop_grace=1)
    assert outcome.status == "Stopped" and outcome.failure_reason == "stopped by request"
    assert outcome.exit_code == 137  # SIGKILL once the grace ran out, not the end of the sleep
    assert (tmp_path / "out" / "partial.txt").read_text() == "so far"
    assert (tmp_path / "out" / "signals.txt").read_text() == "SIGTERM"  # a chance to clean up first
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
