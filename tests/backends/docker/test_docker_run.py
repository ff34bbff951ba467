"""The Docker backend on a real engine: notebooks in containers, as SageMaker Processing runs them."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import nbformat
import pytest
from conftest import BATCAT, EXAMPLES, error_outputs, output_notebook, run_batcat, write_notebook
from docker_fixtures import Runner, job_containers, run_batcat_build

import batcat_nb
from batcat_nb.errors import BackendError, UsageError

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def error_of(stderr: str) -> list[str]:
    """The error ``batcat`` printed, from its first line on (progress lines come before)."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("batcat: error:")]
    assert starts, stderr
    return lines[starts[0] :]


SALES_REVENUE = 12 * 2.5 + 7 * 2.5 + 3 * 10 + 5 * 10 + 9 * 2.5 + 4 * 10 + 15 * 2.5


def submit_started(nb: Path, runner: Runner, experiment: str) -> Any:
    """Submit ``nb`` to Docker and return its handle once its first cell printed 'started'."""
    handle = batcat_nb.submit(
        str(nb),
        backend="docker",
        backend_options={"image": runner.image.tag},
        experiment=experiment,
        log_output=True,
    )
    deadline = time.monotonic() + 60
    while "started" not in handle.logs():
        assert time.monotonic() < deadline, handle.logs()
        time.sleep(0.2)
    return handle


def run_in_docker(notebook: Path, runner, **options):
    """Run in the session's image (``--image``): a batcat_nb edited meanwhile does not rebuild it."""
    backend_options = {"image": runner.image.tag, **options.pop("backend_options", {})}
    return batcat_nb.run(str(notebook), backend="docker", backend_options=backend_options, **options)


def test_train_example_in_a_container_records_the_same_run_as_locally(
    project,
    experiment,
    runs_of,
    mlflow_client,
    runner,
    engine,
):
    handle = batcat_nb.submit(  # as a user would: the image for these requirements, built or reused
        str(EXAMPLES / "train_diabetes.ipynb"),
        parameters={"alpha": 0.05},
        experiment=experiment,
        backend="docker",
        backend_options=runner.options(),
    )
    result = handle.wait()
    assert result.status == "FINISHED", result.reason
    assert Path(result.output_notebook).is_file() and Path(result.html).is_file()
    [run] = runs_of(experiment)
    assert run.info.status == "FINISHED"
    assert run.data.params["alpha"] == "0.05" and run.data.params["seed"] == "42"
    for metric in ("test.rmse", "test.mae", "test.r2"):
        assert metric in run.data.metrics, metric
    assert "train_r2" in run.data.metrics  # mlflow.log_metric inside the container, same store
    tags = run.data.tags
    assert tags["batcat.backend"] == "docker"
    assert tags["batcat.image"] == handle.image.tag and tags["batcat.image"].startswith("batcat-runner:")
    assert tags["batcat.image.digest"] == handle.image.digest and handle.image.digest.startswith("sha256:")
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"train_diabetes.ipynb", "train_diabetes.html", "batcat-manifest.json", "tables"} <= artifacts
    models = mlflow_client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]
    assert job_containers(engine) == []


def test_sales_example_reads_and_writes_local_directories(project, experiment, runs_of, runner):
    result = run_in_docker(
        EXAMPLES / "sales_report.ipynb",
        runner,
        parameters={"min_units": 2},
        inputs={"input": str(EXAMPLES / "data" / "sales")},
        outputs={"output": str(project / "report")},
        experiment=experiment,
    )
    assert result.status == "FINISHED", result.reason
    with open(project / "report" / "summary.csv") as f:
        rows = {row["region"]: row for row in csv.DictReader(f)}
    assert rows["north"]["units"] == "24" and "west" not in rows
    [run] = runs_of(experiment)
    assert run.data.metrics["total_revenue"] == pytest.approx(SALES_REVENUE)
    assert run.data.params["input_dir"] == str(EXAMPLES / "data" / "sales")  # not the container's path
    assert run.data.params["output_dir"] == str(project / "report")


def test_sales_example_reads_and_writes_s3(project, experiment, runs_of, runner, s3_bucket):
    s3 = boto3.client("s3")
    for csv_file in (EXAMPLES / "data" / "sales").glob("*.csv"):
        s3.upload_file(str(csv_file), s3_bucket, f"raw/sales/{csv_file.name}")
    result = run_in_docker(
        EXAMPLES / "sales_report.ipynb",
        runner,
        parameters={"min_units": 2},
        inputs={"input": f"s3://{s3_bucket}/raw/sales"},
        outputs={"output": f"s3://{s3_bucket}/reports/q1-q2"},
        experiment=experiment,
    )
    assert result.status == "FINISHED", result.reason
    summary = s3.get_object(Bucket=s3_bucket, Key="reports/q1-q2/summary.csv")["Body"].read().decode()
    assert summary.splitlines()[0] == "region,units,revenue"
    [run] = runs_of(experiment)
    assert run.data.metrics["total_revenue"] == pytest.approx(SALES_REVENUE)
    assert run.data.params["input_dir"] == f"s3://{s3_bucket}/raw/sales"


def test_code_channel_holds_the_notebook_and_its_includes_as_on_sagemaker(project, experiment, runner):
    (project / "nb").mkdir()
    (project / "nb" / "helper.py").write_text("GREETING = 'hello from helper'\n")
    (project / "shared").mkdir()
    (project / "shared" / "settings.txt").write_text("threshold=3\n")
    nb = write_notebook(
        project / "nb" / "uses_helper.ipynb",
        None,
        "import helper, pathlib\nprint(helper.GREETING, pathlib.Path('shared/settings.txt').read_text())",
    )
    alone = run_in_docker(nb, runner, experiment=experiment)
    assert alone.status == "FAILED" and "No module named 'helper'" in alone.reason  # as SageMaker would
    included = run_in_docker(
        nb,
        runner,
        experiment=experiment,
        backend_options={"include": [str(project / "nb" / "helper.py"), str(project / "shared")]},
    )
    assert included.status == "FINISHED", included.reason
    assert "hello from helper threshold=3" in Path(included.output_notebook).read_text()


def test_notebook_logs_to_a_tracking_server_over_host_networking(
    project,
    experiment,
    runner,
    mlflow_server,
):
    from mlflow.tracking import MlflowClient

    result = run_in_docker(
        EXAMPLES / "train_diabetes.ipynb", runner, experiment=experiment, tracking_uri=mlflow_server
    )
    assert result.status == "FINISHED", result.reason
    assert result.run_url and result.run_url.startswith(mlflow_server)
    run = MlflowClient(mlflow_server).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert {"train_r2", "test.rmse"} <= set(run.data.metrics)
    assert run.data.tags["batcat.image"] == runner.image.tag


def test_failing_notebook_is_failed_with_its_reason_and_keeps_the_notebook(
    project,
    experiment,
    runs_of,
    runner,
    engine,
):
    nb = write_notebook(project / "fails.ipynb", "x = 1", "print('before')", "raise ValueError('bad data')")
    result = run_in_docker(nb, runner, experiment=experiment)
    assert result.status == "FAILED"
    assert "ValueError: bad data" in result.reason
    assert [e["ename"] for e in error_outputs(Path(result.output_notebook))] == ["ValueError"]
    [run] = runs_of(experiment)
    assert run.info.status == "FAILED"
    assert run.data.tags["batcat.error.ename"] == "ValueError"
    assert job_containers(engine) == []


def test_cancel_stops_the_container_and_keeps_the_partial_notebook(
    project,
    experiment,
    runs_of,
    runner,
    engine,
):
    nb = write_notebook(
        project / "slow.ipynb", None, "print('started', flush=True)", "import time\ntime.sleep(300)"
    )
    handle = submit_started(nb, runner, experiment)
    assert handle.status() == "RUNNING"
    handle.cancel()
    result = handle.wait(timeout=60)
    assert result.status == "KILLED" and result.reason == "cancelled"
    assert "started" in Path(result.output_notebook).read_text()  # the worker wrote it: SIGTERM, not SIGKILL
    assert runs_of(experiment)[0].info.status == "KILLED"
    assert job_containers(engine) == []


def test_ctrl_c_kills_the_run_keeps_the_notebook_and_removes_the_container(
    project, experiment, runs_of, runner, engine
):
    nb = write_notebook(
        project / "slow.ipynb", None, "print('started', flush=True)", "import time\ntime.sleep(300)"
    )
    command = [BATCAT, "run", str(nb), "-e", experiment, "--backend", "docker", "--log-output"]
    environment = {**os.environ, "BATCAT_DOCKER_IMAGE": runner.image.tag}
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    ) as batcat:
        assert batcat.stderr is not None
        for line in batcat.stderr:
            if "started" in line:
                break
        batcat.send_signal(signal.SIGINT)
        out, err = batcat.communicate(timeout=60)
    assert batcat.returncode == 130, err
    assert "KILLED" in out and "interrupted by the user (Ctrl-C)" in out
    assert "started" in output_notebook(out).read_text()
    assert runs_of(experiment)[0].info.status == "KILLED"
    assert job_containers(engine) == []


def test_container_killed_for_memory_says_out_of_memory(project, experiment, runs_of, runner):
    nb = write_notebook(project / "greedy.ipynb", None, "hog = b'x' * (2 * 1024**3)", "print(len(hog))")
    result = run_in_docker(nb, runner, experiment=experiment, backend_options={"memory": "400m"})
    assert result.status == "FAILED"
    assert "out of memory (--memory 400m)" in result.reason
    assert "out of memory" in runs_of(experiment)[0].data.tags["batcat.reason"]


def test_second_build_reuses_the_image_without_a_step(runner):
    args = ["--base-image", runner.image.base_image, "--requirements", str(runner.requirements)]
    first = run_batcat_build(*args)  # reuses the session's image, unless batcat_nb changed since
    assert first.returncode == 0, first.stderr
    second = run_batcat_build(*args)  # bench/docker_run.py times this
    assert second.returncode == 0, second.stderr
    tag, digest = first.stdout.splitlines()[:2]
    assert second.stdout.splitlines()[:2] == [tag, digest] and tag.startswith("batcat-runner:")
    assert "reused" in second.stdout and "Step " not in second.stderr


def test_build_push_prints_the_image_uri_and_pushes_a_digest_once(runner, local_registry, aws_env):
    repository = f"{local_registry}/batcat-cli-{uuid.uuid4().hex[:6]}"
    args = ["--base-image", runner.image.base_image, "--requirements", str(runner.requirements)]
    first = run_batcat_build(*args, "--push", "--repository", repository, "--ecr")
    assert first.returncode == 0, first.stderr
    tag = first.stdout.splitlines()[0].rpartition(":")[2]
    uri = f"{repository}:{tag}"
    assert f"  use     --image {uri}" in first.stdout and "already" not in first.stdout
    name = repository.split("/", 1)[1]
    with urllib.request.urlopen(f"http://{local_registry}/v2/{name}/tags/list", timeout=10) as answer:
        assert json.load(answer)["tags"] == [tag]
    ecr = boto3.client("ecr").describe_repositories(repositoryNames=[name])["repositories"]
    assert ecr[0]["repositoryName"] == name  # --ecr: created, and the login came from ECR

    again = run_batcat_build(*args, "--push", "--repository", repository)
    assert again.returncode == 0, again.stderr
    assert f"{uri}  (already in the registry: sha256:" in again.stdout


def test_push_options_without_push_and_an_unreachable_registry_are_one_line_errors(runner, aws_env):
    args = ["--base-image", runner.image.base_image, "--requirements", str(runner.requirements)]
    alone = run_batcat_build(*args, "--repository", "127.0.0.1:9/x")
    assert alone.returncode == 2 and "add --push" in alone.stderr and "Traceback" not in alone.stderr
    closed = run_batcat_build(*args, "--push", "--repository", "127.0.0.1:9/batcat-runner")
    assert closed.returncode != 0 and "Traceback" not in closed.stderr
    assert "127.0.0.1:9/batcat-runner" in closed.stderr.strip().splitlines()[-1]


def test_changing_only_the_notebook_reuses_the_image(project, experiment, runner, engine):
    nb = write_notebook(project / "nb.ipynb", "n = 1", "print(n * 2)")
    first = batcat_nb.submit(
        str(nb), backend="docker", backend_options=runner.options(), experiment=experiment
    )
    assert first.wait().status == "FINISHED"
    created = engine.images.get(first.image.tag).attrs["Created"]
    write_notebook(project / "nb.ipynb", "n = 1", "print(n * 3)")
    second = batcat_nb.submit(
        str(nb), backend="docker", backend_options=runner.options(), experiment=experiment
    )
    result = second.wait()
    assert result.status == "FINISHED"
    assert "3" in nbformat.read(result.output_notebook, as_version=4).cells[1].outputs[0]["text"]
    assert second.image.tag == first.image.tag and second.image.digest == first.image.digest
    assert not second.image.built  # reused, not rebuilt: the engine still has the first build
    assert engine.images.get(second.image.tag).attrs["Created"] == created


def test_engine_not_running_is_one_line_naming_the_fix(project, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    nb = write_notebook(project / "nb.ipynb", None, "1")
    with pytest.raises(BackendError) as caught:
        batcat_nb.run(str(nb), backend="docker")
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        "the Docker engine at unix:///nonexistent/docker.sock is not answering (nothing is listening "
        "there); start it (sudo systemctl start docker, or sudo dockerd &) or unset DOCKER_HOST"
    )
    done = run_batcat_build()
    assert done.returncode == 2
    assert done.stderr.startswith("batcat: error: the Docker engine") and done.stderr.count("\n") == 1


def test_two_outputs_with_the_same_name_are_refused(project, runner):
    nb = write_notebook(project / "nb.ipynb", "out_dir = ''", "1")
    done = run_batcat("run", str(nb), "--backend", "docker", "--output", "out=a", "--output", "out=b")
    assert done.returncode == 2 and "--output out is given twice" in done.stderr
    with pytest.raises(UsageError, match="'data' names both an input and an output"):
        batcat_nb.run(
            str(nb),
            backend="docker",
            backend_options=runner.options(),
            inputs={"data": str(EXAMPLES / "data" / "sales")},
            outputs={"data": str(project / "out")},
        )


def test_unreadable_s3_input_is_refused_before_any_container_starts(
    project,
    experiment,
    runs_of,
    runner,
    engine,
    moto_server,
):
    nb = write_notebook(project / "nb.ipynb", "input_dir = ''", "1")
    containers_before = {c.id for c in engine.containers.list(all=True)}
    with pytest.raises(UsageError, match="input 'input': cannot read s3://no-such-bucket-batcat/data"):
        run_in_docker(nb, runner, inputs={"input": "s3://no-such-bucket-batcat/data"}, experiment=experiment)
    assert {c.id for c in engine.containers.list(all=True)} == containers_before
    assert runs_of(experiment) == []


def test_bad_requirement_fails_the_build_naming_the_step_and_the_log(project, runner):
    (project / "requirements.txt").write_text("pandas\nbatcat-no-such-package-xyz==1.0\n")
    done = run_batcat_build("--base-image", runner.image.base_image, cwd=project)
    assert done.returncode == 2
    error, *tail = error_of(done.stderr)
    assert error.startswith("batcat: error: building the runner image failed while resolving the wheels")
    assert "batcat-no-such-package-xyz==1.0" in error and "fix that requirement" in error
    assert tail[0] == "last lines of the build log:" and "Traceback" not in done.stderr


def test_requirement_that_breaks_the_runtime_stack_fails_at_its_dockerfile_step(project, runner):
    (project / "requirements.txt").write_text("nbformat<5\n")  # papermill and nbclient need nbformat 5
    done = run_batcat_build("--base-image", runner.image.base_image, cwd=project)
    assert done.returncode == 2, done.stdout
    error, *tail = error_of(done.stderr)
    assert "building the runner image failed at Step" in error and "user-requirements.txt" in error
    assert "returned a non-zero code" in error and tail[0] == "last lines of the build log:"
    assert "has requirement nbformat" in done.stderr  # pip check's verdict, from the log's tail


SEES = """
import json, os, pathlib
mounts = [line.split()[4] for line in pathlib.Path('/proc/self/mountinfo').read_text().splitlines()]
system = ('/proc', '/sys', '/dev', '/etc/hostname', '/etc/hosts', '/etc/resolv.conf')
cgroup = pathlib.Path('/sys/fs/cgroup/memory/memory.limit_in_bytes')
if not cgroup.exists():
    cgroup = pathlib.Path('/sys/fs/cgroup/memory.max')
print('SEES', json.dumps({
    'mounts': sorted(m for m in mounts if m != '/' and not m.startswith(system)),
    'interfaces': sorted(os.listdir('/sys/class/net')),
    'memory': int(cgroup.read_text()),
}))
"""


def test_job_sees_its_channels_config_and_store_and_nothing_else_of_the_host(
    project, experiment, runner, tracking_uri
):
    (project / ".env").write_text("API_TOKEN=secret\n")
    nb = write_notebook(project / "sees.ipynb", None, SEES)
    result = run_in_docker(
        nb, runner, experiment=experiment, backend_options={"instance_type": "ml.t3.medium"}
    )
    assert result.status == "FINISHED", result.reason
    notebook = nbformat.read(result.output_notebook, as_version=4)
    text = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    seen = json.loads(text.split("SEES ", 1)[1])
    store = str(Path(tracking_uri.removeprefix("sqlite:///")).parent)
    assert seen["mounts"] == [store]  # the store's own folder; channels and config are copied in
    assert seen["interfaces"] == ["eth0", "lo"]  # Docker's bridge, not the host's network
    assert seen["memory"] == 4 * 1024**3  # ml.t3.medium: 4 GiB


def test_stop_ends_killed_with_the_partial_notebook_whatever_the_notebook_does_with_ctrl_c(
    project, experiment, runs_of, runner, engine
):
    stubborn = (
        "import time\n"
        "try:\n"
        "    time.sleep(300)\n"
        "except KeyboardInterrupt:\n"
        "    print('caught, going on')\n"
        "time.sleep(300)"
    )
    nb = write_notebook(project / "stubborn.ipynb", None, "print('started', flush=True)", stubborn)
    handle = submit_started(nb, runner, experiment)
    handle.cancel()
    result = handle.wait(timeout=60)
    assert result.status == "KILLED"
    output = Path(result.output_notebook)
    assert "started" in output.read_text()  # the partial notebook, written by the worker
    manifest = json.loads((output.parent / "batcat-manifest.json").read_text())
    assert manifest["status"] == "KILLED" and manifest["reason"] == "stopped by SIGINT"  # as Processing stops
    assert runs_of(experiment)[0].info.status == "KILLED"
    assert job_containers(engine) == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"timeout": 800_000}, "MaxRuntimeInSeconds=800060 is above the maximum 777600"),
        ({"backend_options": {"env": {"BAD-KEY": "1"}}}, "Environment key 'BAD-KEY'"),
        ({"outputs": {f"o{i}": f"out{i}" for i in range(10)}}, "Outputs has 11 items, at most 10"),
    ],
)
def test_a_request_sagemaker_would_refuse_is_refused_before_a_container_runs(
    project, experiment, runner, engine, options, problem
):
    nb = write_notebook(project / "nb.ipynb", None, "1")
    before = {c.id for c in engine.containers.list(all=True)}
    with pytest.raises(UsageError, match="CreateProcessingJob request refused before sending") as refused:
        run_in_docker(nb, runner, experiment=experiment, **options)
    assert problem in str(refused.value)
    assert {c.id for c in engine.containers.list(all=True)} == before


@pytest.fixture
def iam_enforced(moto_server, monkeypatch):
    """From here on moto evaluates IAM (INITIAL_NO_AUTH_ACTION_COUNT) for every call, made as a user
    who may only assume roles and list buckets."""
    from moto import settings

    iam = boto3.client("iam")
    name = f"batcat-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    allow = {"Effect": "Allow", "Action": ["sts:AssumeRole", "s3:ListBucket"], "Resource": "*"}
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=policy(allow))
    keys = iam.create_access_key(UserName=name)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it cached the previous credentials
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    return name


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def role_reading(bucket: str, prefix: str) -> str:
    """A role that may read ``s3://bucket/prefix*`` and nothing else."""
    iam = boto3.client("iam")
    name = f"batcat-job-{uuid.uuid4().hex[:8]}"
    trust = {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=policy(trust))["Role"]["Arn"]
    read = {
        "Effect": "Allow",
        "Action": ["s3:ListBucket", "s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{prefix}*"],
    }
    iam.put_role_policy(RoleName=name, PolicyName="read", PolicyDocument=policy(read))
    return str(arn)


def test_as_role_moves_the_data_with_the_roles_rights_and_no_more(
    project, experiment, runner, s3_bucket, request
):
    s3 = boto3.client("s3")
    for prefix in ("allowed", "denied"):
        s3.put_object(Bucket=s3_bucket, Key=f"{prefix}/a.csv", Body=b"x\n1\n")
    role = role_reading(s3_bucket, "allowed/")
    request.getfixturevalue("iam_enforced")
    nb = write_notebook(project / "nb.ipynb", "input_dir = ''", "import os; print(os.listdir(input_dir))")

    def run(prefix: str):
        options = {"role": role, "as_role": True}
        return run_in_docker(
            nb,
            runner,
            experiment=experiment,
            inputs={"input": f"s3://{s3_bucket}/{prefix}"},
            backend_options=options,
        )

    allowed = run("allowed")
    assert allowed.status == "FINISHED", allowed.reason
    denied = run("denied")  # the user may list it; the role may not: the job fails as on SageMaker
    assert denied.status == "FAILED" and "Forbidden" in denied.reason, denied.reason


# What the container was given, as the notebook sees it (never the credentials' values).
GIVEN = """
import glob, os
files = glob.glob('/sys/fs/cgroup/cpu*/cpu.cfs_quota_us') + glob.glob('/sys/fs/cgroup/cpu.max')
quota = [open(p).read().split()[0] for p in files]  # cgroup v1, else v2
print('quota', quota[0] if quota else None)
print('greeting', os.environ.get('GREETING'))
print('aws key', 'AWS_ACCESS_KEY_ID' in os.environ, 'AWS_SECRET_ACCESS_KEY' in os.environ)
"""


def test_pyproject_docker_section_cpus_and_credentials_reach_the_container_only_as_asked(
    project, experiment, runner, aws_env
):
    (project / "pyproject.toml").write_text(
        '[tool.batcat.docker]\ncpus = 0.5\nenv = { GREETING = "from-pyproject" }\n'
    )
    nb = write_notebook(project / "given.ipynb", None, GIVEN)
    base = ["run", str(nb), "-e", experiment, "--backend", "docker", "--image", runner.image.tag]

    done = run_batcat(*base, "--pass-aws-credentials", timeout=600)
    assert done.returncode == 0, done.stderr
    seen = output_notebook(done.stdout).read_text()
    assert "quota 50000" in seen  # [tool.batcat.docker] cpus = 0.5: half of each 100 ms period
    assert "greeting from-pyproject" in seen
    assert "aws key True True" in seen

    done = run_batcat(*base, "--cpus", "1", timeout=600)  # the argument wins over pyproject
    assert done.returncode == 0, done.stderr
    seen = output_notebook(done.stdout).read_text()
    assert "quota 100000" in seen and "aws key False False" in seen  # not asked: not passed


def test_gpus_without_an_nvidia_runtime_is_one_line_naming_the_fix(project, runner, engine):
    if "nvidia" in (engine.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime")
    nb = write_notebook(project / "nb.ipynb", None, "1")
    done = run_batcat("run", str(nb), "--backend", "docker", "--image", runner.image.tag, "--gpus", "all")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = error_of(done.stderr)
    assert "--gpus needs the NVIDIA Container Toolkit" in line
