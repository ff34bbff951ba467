"""Secret parameters (``--secret``): the kernel gets the value; no file, store, log or request holds it.

Each test runs a real notebook (real kernel, real SQLite store, the real worker) and then reads
every byte the run left behind: the output folder (notebook, HTML, manifest, log), the MLflow
store's database and artifacts, and, for SageMaker, every S3 object and the job's request.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from pathlib import Path

import nbformat
import pytest
from conftest import run_batcat, write_notebook

from batcat_nb import api
from batcat_nb.errors import UsageError
from batcat_nb.spec import RunRequest

PARAMETERS = 'api_token = ""\nalpha = 1'


def secret() -> str:
    return f"tok-{uuid.uuid4().hex}"


def printing_notebook(path: Path, value: str, fail: bool = False) -> Path:
    """Checks that it received ``value``, then shows it every way a notebook can."""
    digest = hashlib.sha256(value.encode()).hexdigest()
    cells = [
        "import hashlib, os, sys\n"
        f"assert hashlib.sha256(api_token.encode()).hexdigest() == {digest!r}, 'wrong value'\n"
        "assert not [k for k in os.environ if k.startswith('BATCAT_SECRET_')], 'left in the environment'\n"
        "print('token is', api_token)\n"
        "print(api_token, file=sys.stderr)",
        "api_token",
        "from IPython.display import HTML, display\ndisplay(HTML(f'<b>{api_token}</b>'))",
        "print('split', api_token[:9], end='', flush=True)\nprint(api_token[9:])",  # two messages
    ]
    if fail:
        cells.append("raise ValueError('bad token ' + api_token)")
    return write_notebook(path, PARAMETERS, *cells)


def files_under(*roots: Path) -> Iterable[Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (p for p in root.rglob("*") if p.is_file())


def assert_nowhere(value: str, *roots: Path, texts: Iterable[str] = ()) -> None:
    """Neither the value nor its JSON-escaped form is in any file under ``roots`` or in ``texts``."""
    needle = value.encode()
    checked = 0
    for path in files_under(*roots):
        assert needle not in path.read_bytes(), f"the secret is in {path}"
        checked += 1
    assert checked, f"nothing to check under {roots}"
    for text in texts:
        assert value not in text


def store_files(tracking_uri: str) -> Path:
    """The folder holding the SQLite store and its artifacts."""
    return Path(tracking_uri.removeprefix("sqlite:///")).parent


def masked_outputs(notebook: Path) -> list[str]:
    nb = nbformat.read(str(notebook), as_version=4)
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text") or json.dumps(output.get("data", {})) or output.get("evalue"))
    return texts


# ---------------------------------------------------------------------------------------------
# local runs, from the shell


@pytest.mark.parametrize("agent", ["1", "0"], ids=["agent", "own-worker"])
def test_secret_reaches_the_kernel_and_nothing_else(
    project, experiment, runs_of, tracking_uri, agent, monkeypatch
):
    value = secret()
    monkeypatch.setenv("BATCAT_AGENT", agent)
    monkeypatch.setenv("MY_TOKEN", value)
    notebook = printing_notebook(project / "nb.ipynb", value)

    done = run_batcat(
        "run",
        str(notebook),
        "-e",
        experiment,
        "-s",
        "api_token=env:MY_TOKEN",
        "-p",
        "alpha",
        "2",
        "--log-output",
    )

    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = runs_of(experiment)
    assert run.info.status == "FINISHED"
    assert run.data.params["api_token"] == "<secret env:MY_TOKEN>"  # the name and the source only
    assert run.data.params["alpha"] == "2"
    executed = project / "batcat-runs" / run.data.tags["batcat.job_name"]
    outputs = masked_outputs(executed / "nb.ipynb")
    assert "token is ***\n" in outputs and "***\n" in outputs  # stdout and stderr, masked
    assert any("'***'" in text for text in outputs)  # the cell's value
    assert any("<b>***</b>" in text for text in outputs)  # rich output
    assert "split ***\n" in outputs  # printed in two pieces, masked whole in the notebook
    injected = nbformat.read(str(executed / "nb.ipynb"), as_version=4).cells[1].source
    assert "environ.pop('BATCAT_SECRET_api_token')" in injected
    assert {p.name for p in executed.iterdir()} >= {
        "nb.ipynb",
        "nb.html",
        "batcat-manifest.json",
        "batcat-job.log",
    }
    assert_nowhere(value, executed, store_files(tracking_uri), texts=[done.stdout, done.stderr])


def test_failing_cell_that_shows_the_secret_is_masked_in_the_reason(
    project, experiment, runs_of, tracking_uri, monkeypatch
):
    value = secret()
    monkeypatch.setenv("api_token", value)  # the default source: env:NAME
    notebook = printing_notebook(project / "nb.ipynb", value, fail=True)

    done = run_batcat("run", str(notebook), "-e", experiment, "--secret", "api_token")

    assert done.returncode == 1
    (run,) = runs_of(experiment)
    assert run.info.status == "FAILED"
    assert run.data.tags["batcat.error.evalue"] == "bad token ***"
    assert "bad token ***" in done.stdout + done.stderr
    executed = project / "batcat-runs" / run.data.tags["batcat.job_name"]
    assert_nowhere(value, executed, store_files(tracking_uri), texts=[done.stdout, done.stderr])


@pytest.mark.parametrize("agent", ["1", "0"], ids=["agent", "own-pool"])
def test_python_api_takes_secrets_and_a_sweep_passes_them_to_every_run(
    project, experiment, runs_of, tracking_uri, monkeypatch, agent
):
    import batcat_nb

    monkeypatch.setenv("BATCAT_AGENT", agent)
    value = secret()
    monkeypatch.setenv("API_TOKEN", value)
    notebook = printing_notebook(project / "nb.ipynb", value)

    result = batcat_nb.sweep(
        str(notebook), grid={"alpha": [1, 2]}, experiment=experiment, secrets={"api_token": "env:API_TOKEN"}
    )

    runs = runs_of(experiment)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}, result
    assert_nowhere(value, project / "batcat-runs", store_files(tracking_uri), texts=[str(result)])


def test_secret_looking_parameter_is_warned_about_naming_secret(project, experiment):
    notebook = write_notebook(project / "nb.ipynb", 'api_key = ""', "print(len(api_key))")

    done = run_batcat("run", str(notebook), "-e", experiment, "-p", "api_key", "abc")

    assert done.returncode == 0, done.stderr
    assert "parameter 'api_key' looks like a secret" in done.stderr
    assert "--secret api_key" in done.stderr


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["-s", "api_token=env:NOT_SET_ANYWHERE"], "$NOT_SET_ANYWHERE is not set here"),
        (["-s", "api_tokn"], "has no parameter 'api_tokn' (did you mean 'api_token'?)"),
        (
            ["-s", "api_token=vault:x"],
            "the source is env:VARIABLE, ssm:/PARAMETER or secretsmanager:SECRET_ID",
        ),
        (["-s", "api_token=ssm:/team/token"], "ssm: is read inside SageMaker jobs only"),
        (["-s", "api_token", "-p", "api_token", "x"], "given both as a parameter and as --secret"),
    ],
)
def test_bad_secrets_are_one_line_errors(project, args, problem, monkeypatch):
    monkeypatch.setenv("api_token", "x")
    notebook = write_notebook(project / "nb.ipynb", PARAMETERS, "print(1)")

    done = run_batcat("run", str(notebook), *args)

    assert done.returncode == 2, done.stderr
    assert problem in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_job_description_holds_the_reference_not_the_value(project, monkeypatch):
    value = secret()
    monkeypatch.setenv("api_token", value)
    notebook = write_notebook(project / "nb.ipynb", PARAMETERS, "print(1)")

    spec = api.resolve_spec(RunRequest(notebook=str(notebook), secrets={"api_token": ""}))

    assert spec.worker_job()["secrets"] == {"api_token": "env:api_token"}  # the default source
    assert "api_token" not in spec.parameters
    assert value not in json.dumps(spec.worker_job()) and value not in json.dumps(spec.__dict__)


# ---------------------------------------------------------------------------------------------
# Docker: the value is the container's environment, never its processingjobconfig.json


@pytest.mark.docker
def test_docker_job_gets_the_secret_in_its_environment_not_its_config(
    project, experiment, runs_of, tracking_uri, runner, monkeypatch
):
    value = secret()
    monkeypatch.setenv("API_TOKEN", value)
    notebook = printing_notebook(project / "nb.ipynb", value)
    with notebook.open() as handle:
        nb = nbformat.read(handle, as_version=4)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "config = open('/opt/ml/config/processingjobconfig.json').read()\n"
            "assert api_token not in config and 'BATCAT_SECRET' not in config, 'in the config'"
        )
    )
    nbformat.write(nb, str(notebook))

    result = api.run(
        RunRequest(
            notebook=str(notebook),
            backend="docker",
            experiment=experiment,
            secrets={"api_token": "env:API_TOKEN"},
            backend_options=runner.options(),
            progress=False,
        )
    )

    assert result.status == "FINISHED", result.reason
    assert "token is ***\n" in masked_outputs(Path(result.output_notebook))
    assert_nowhere(value, Path(result.output_notebook).parent, store_files(tracking_uri))


# ---------------------------------------------------------------------------------------------
# SageMaker: the reference travels, the job reads it with its role (moto SSM and Secrets Manager)


@pytest.mark.parametrize("store", ["ssm", "secretsmanager"])
def test_sagemaker_job_reads_the_secret_itself_and_nothing_holds_it(
    project, options, bucket, experiment, fake_sagemaker, tracking_uri, runs_of, store
):
    import boto3

    from batcat_nb.backends.sagemaker import jobs as sagemaker_jobs

    value = secret()
    if store == "ssm":
        name = f"/batcat/{uuid.uuid4().hex[:8]}/token"
        boto3.client("ssm").put_parameter(Name=name, Value=value, Type="SecureString")
        source = f"ssm:{name}"
    else:
        name = f"batcat-{uuid.uuid4().hex[:8]}"
        boto3.client("secretsmanager").create_secret(Name=name, SecretString=value)
        source = f"secretsmanager:{name}"
    notebook = printing_notebook(project / "nb.ipynb", value)

    result = api.run(
        RunRequest(
            notebook=str(notebook),
            backend="sagemaker",
            experiment=experiment,
            secrets={"api_token": source},
            backend_options=dict(options),
            progress=False,
        )
    )

    assert result.status == "FINISHED", result.reason
    (run,) = runs_of(experiment)
    assert run.data.params["api_token"] == f"<secret {source}>"
    s3 = boto3.client("s3")
    objects = [
        s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().decode(errors="replace")
        for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
    ]
    assert any("token is ***" in text for text in objects)  # the executed notebook, masked
    description = sagemaker_jobs.describe_job(result.job_name)
    texts = [
        *objects,
        json.dumps(fake_sagemaker.requests[result.job_name]),
        json.dumps(description, default=str),
    ]
    assert_nowhere(value, Path(result.output_notebook).parent, store_files(tracking_uri), texts=texts)


def test_sagemaker_refuses_a_value_from_this_machine(project, options, bucket, monkeypatch):
    monkeypatch.setenv("api_token", "x")
    notebook = write_notebook(project / "nb.ipynb", PARAMETERS, "print(1)")
    request = RunRequest(
        notebook=str(notebook), backend="sagemaker", secrets={"api_token": ""}, backend_options=options
    )

    with pytest.raises(UsageError, match=r"store it in SSM \(--secret api_token=ssm:/PATH\)"):
        api.submit(request)


def test_unreadable_ssm_parameter_fails_the_job_naming_it(
    project, options, bucket, experiment, fake_sagemaker
):
    notebook = write_notebook(project / "nb.ipynb", PARAMETERS, "print(1)")

    result = api.run(
        RunRequest(
            notebook=str(notebook),
            backend="sagemaker",
            experiment=experiment,
            secrets={"api_token": "ssm:/does/not/exist"},
            backend_options=dict(options),
            progress=False,
        )
    )

    assert result.status == "FAILED"
    assert "secret 'api_token': cannot read ssm:/does/not/exist with the job's role" in result.reason


def test_a_job_without_a_region_in_its_environment_reads_its_secrets_in_its_own_region(tmp_path, monkeypatch):
    from batcat_nb.layout import ML_ROOT_ENV
    from batcat_nb.secrets import job_region

    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv(ML_ROOT_ENV, str(tmp_path))
    assert job_region() is None  # no config: boto3's own resolution decides
    (tmp_path / "config").mkdir()
    arn = "arn:aws:sagemaker:eu-west-3:123456789012:processing-job/j"
    (tmp_path / "config" / "processingjobconfig.json").write_text(json.dumps({"ProcessingJobArn": arn}))
    assert job_region() == "eu-west-3"
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert job_region() == "ap-south-1"
