"""Fast checks of ``api.py``, sharp enough for mutation testing (``make mutate``): a request
resolved into a job (configuration precedence, defaults, the checks and their messages), then
the job started, tracked, cancelled, retried and waited for, with a real SQLite MLflow store.

The jobs run on ``FakeBackend``, which implements the Backend protocol with the real JobHandle
and ends each job at once with the manifest a worker would write: api.py's logic is the point
here, not running a notebook (each real backend has tests of its own)."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import nbformat
import pytest
from conftest import free_port, work_in, write_notebook
from mlflow.tracking import MlflowClient  # imported once, before `make mutate` forks per mutant

from batcat_nb import api, lease, retry
from batcat_nb.backends import BackendRegistry
from batcat_nb.backends.base import JobHandle
from batcat_nb.errors import BackendError, ParameterError, TrackingError, UsageError
from batcat_nb.manifest import FAILED, FINISHED, KILLED, RUNNING, Manifest
from batcat_nb.notebook import load_notebook
from batcat_nb.result import Stopped
from batcat_nb.spec import JobSpec, RunRequest
from batcat_nb.tracking import Tracker

ENGINE_FAILED = "the Docker engine failed: no space left"  # an infrastructure failure: retried


class FakeHandle(JobHandle):
    """A job that ends when waited for, as its ``outcome`` says: FINISHED, ENGINE_FAILED, or an
    exception the launcher gets while waiting (Ctrl-C, SIGTERM) until the job is stopped."""

    def __init__(self, spec: JobSpec, outcome: str | BaseException) -> None:
        super().__init__(spec)
        self.outcome, self.attached, self.stopped = outcome, False, False

    def _on_attach(self) -> None:
        self.attached = True

    def status(self) -> str:
        return RUNNING

    def _wait_for_exit(self, timeout: float | None) -> bool:
        if isinstance(self.outcome, BaseException) and not self.stopped:
            raise self.outcome
        return True

    def _fetch_outputs(self) -> Path:
        output = Path(self.spec.output_dir)
        (output / "out.ipynb").write_text("{}")
        status = KILLED if self.stopped else FINISHED if self.outcome == FINISHED else FAILED
        Manifest(
            self.job_name,
            status=status,
            notebook="out.ipynb",
            parameters=self.spec.recorded_parameters,
            metrics={"score": [(0.5, 0)]},
            reason="" if status == FINISHED else str(self.outcome),
            started_at=1.0,
            ended_at=2.0,
        ).write(output)
        return output

    def _stop(self) -> None:
        self.stopped = True


class FakeBackend:
    """The Backend protocol: each job ends as the next of ``outcomes`` says (FINISHED when none
    is left); ``jobs`` keeps every handle; ``refusal``, when set, is raised by every submit after
    the first (an engine gone between two attempts). Class attributes: the registry makes an
    instance per lookup, and the ``fake`` fixture resets them per test."""

    name = "fake"
    outcomes: list[str | BaseException] = []
    jobs: list[FakeHandle] = []
    refusal: BaseException | None = None

    def validate(self, spec: JobSpec) -> None:
        if spec.backend_options.get("gpus"):
            raise UsageError("--gpus: the fake backend has no GPU")

    def submit(self, spec: JobSpec) -> FakeHandle:
        if self.jobs and self.refusal is not None:
            raise self.refusal
        handle = FakeHandle(spec, self.outcomes.pop(0) if self.outcomes else FINISHED)
        self.jobs.append(handle)
        return handle


class AgentTracker(Tracker):
    """What a backend's ``tracker`` hook gives (the local agent's): it reconciles the store itself."""

    reconciled = 0
    failure: Exception | None = None

    def reconcile(self) -> None:
        type(self).reconciled += 1
        if self.failure is not None:
            raise self.failure


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeBackend]:
    monkeypatch.setattr(api, "registry", BackendRegistry({"fake": f"{__name__}:FakeBackend"}))
    monkeypatch.setattr(FakeBackend, "outcomes", [])
    monkeypatch.setattr(FakeBackend, "jobs", [])
    monkeypatch.setattr(FakeBackend, "refusal", None)
    monkeypatch.setattr(AgentTracker, "reconciled", 0)
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.0)  # no pause before a retry
    return FakeBackend


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str) -> Path:
    """A project folder of its own (no pyproject.toml), its runs in the test's store."""
    project = tmp_path / "project"
    project.mkdir()
    return work_in(project, store, monkeypatch)


@pytest.fixture
def nb(here: Path) -> str:
    cell = "alpha = 0.5\nn = 3\ndata_dir = ''\nout_dir = ''\ntoken = ''"
    return str(write_notebook(here / "nb.ipynb", cell, "print(alpha)", kernel="Julia-1.9"))


def _run(store: str, run_id: str):
    return MlflowClient(store).get_run(run_id)


# --------------------------------------------------------------------------- resolving a request


def test_a_request_resolves_to_the_notebooks_and_the_projects_defaults(here, nb, store):
    (here / "data").mkdir()
    inputs, outputs = {"data": "data", "raw": "s3://b/i"}, {"out": "s3://b/o", "plots": "plots"}
    request = RunRequest(nb, parameters={"alpha": 0.1}, inputs=inputs, outputs=outputs)
    spec = api.resolve_spec(request)
    assert re.fullmatch(r"nb-\d{8}-\d{6}-[0-9a-f]{6}", spec.job_name)
    assert (spec.notebook, spec.notebook_sha256) == (nb, hashlib.sha256(Path(nb).read_bytes()).hexdigest())
    assert (spec.kernel, spec.backend, spec.experiment) == ("julia-1.9", "local", "nb")
    assert (spec.parameters, spec.declared_parameters) == (
        {"alpha": 0.1},
        ["alpha", "n", "data_dir", "out_dir", "token"],
    )
    assert spec.recorded_parameters == {
        "alpha": "0.1",
        "n": "3",
        "data_dir": str(here / "data"),  # a channel's parameter records where the channel comes from
        "out_dir": "s3://b/o",
        "token": "",
    }
    assert spec.inputs == {"data": str(here / "data"), "raw": "s3://b/i"}  # local paths made absolute
    assert spec.outputs == {"out": "s3://b/o", "plots": str(here / "plots")}
    assert spec.output_dir == str(here / "batcat-runs" / spec.job_name)
    assert (spec.tracking_uri, spec.timeout, spec.execution_timeout, spec.retries) == (store, None, None, 0)
    assert (spec.log_output, spec.progress, spec.tags, spec.backend_options) == (False, True, {}, {})
    assert (spec.secrets, spec.notebook_content) == ({}, None)  # the .ipynb file itself runs


def test_arguments_win_over_the_environment_which_wins_over_the_project(here, nb, monkeypatch):
    (here / "pyproject.toml").write_text(
        "[tool.batcat]\nbackend = 'p'\nexperiment = 'p'\ntracking_uri = 'sqlite:///p.db'\n"
        "output_dir = 'p'\nkernel = 'p'\ntimeout = 1.0\nretries = 1\n"
    )
    chosen = ("backend", "experiment", "tracking_uri", "output_dir", "kernel", "timeout", "retries")

    def resolved(request: RunRequest) -> tuple:
        spec = api.resolve_spec(request)
        output = Path(spec.output_dir).parent.name
        return (
            spec.backend,
            spec.experiment,
            spec.tracking_uri,
            output,
            spec.kernel,
            spec.timeout,
            spec.retries,
        )

    assert resolved(RunRequest(nb)) == ("p", "p", f"sqlite:///{here}/p.db", "p", "p", 1.0, 1)
    for name, value in zip(chosen, ["e", "e", "sqlite:///e.db", "e", "E", "2", "2"], strict=True):
        monkeypatch.setenv(f"BATCAT_{name.upper()}", value)
    assert resolved(RunRequest(nb)) == ("e", "e", f"sqlite:///{here}/e.db", "e", "e", 2.0, 2)
    given = RunRequest(nb, backend="a", experiment="a", tracking_uri="sqlite:///a.db", output_dir="a")
    given.kernel, given.timeout, given.retries = "A", 3.0, 3
    assert resolved(given) == ("a", "a", f"sqlite:///{here}/a.db", "a", "a", 3.0, 3)


def test_what_the_request_says_of_the_run_itself_reaches_the_job(here, nb):
    request = RunRequest(nb, job_name="my-job-1", execution_timeout=9.0, log_output=True, progress=False)
    request.tags, request.backend_options = {"team": "x"}, {"image": "i"}
    spec = api.resolve_spec(request)
    assert (spec.job_name, spec.execution_timeout, spec.log_output, spec.progress) == (
        "my-job-1",
        9.0,
        True,
        False,
    )
    assert (spec.tags, spec.backend_options) == ({"team": "x"}, {"image": "i"})
    assert spec.output_dir == str(here / "batcat-runs" / "my-job-1")


def test_a_notebook_without_kernel_or_parameters_runs_in_python3(here):
    plain = here / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), str(plain))
    spec = api.resolve_spec(RunRequest(str(plain), parameters={"x": 1}))
    assert (spec.kernel, spec.declared_parameters, spec.parameters) == ("python3", [], {"x": 1})


def test_a_text_notebook_or_a_given_one_travels_as_content(here, nb):
    text = here / "script.py"
    text.write_text("# %%\nprint(1)\n")
    spec = api.resolve_spec(RunRequest(str(text)))
    assert [cell["source"] for cell in spec.notebook_content["cells"]] == ["print(1)"]
    recorded = load_notebook(nb)  # a rerun's notebook, as recorded; the file may have changed since
    Path(nb).write_text("{}")
    spec = api.resolve_spec(RunRequest(nb), notebook=recorded)
    assert spec.notebook_content == recorded.content and spec.declared_parameters[0] == "alpha"


def test_a_job_name_sagemaker_would_refuse_is_one_line(here, nb):
    with pytest.raises(UsageError) as caught:
        api.resolve_spec(RunRequest(nb, job_name="my_job"))
    assert str(caught.value) == (
        "job name 'my_job': use 1 to 63 letters, digits and '-', starting with a letter or digit"
    )


def test_channels_batcat_uses_itself_or_too_many_inputs_are_refused(here, nb):
    def refused(inputs: dict[str, str], outputs: dict[str, str]) -> str:
        with pytest.raises(UsageError) as caught:
            api.resolve_spec(RunRequest(nb, inputs=inputs, outputs=outputs))
        return str(caught.value)

    itself = "is a channel batcat uses itself (batcat, code, notebook); name your input or output differently"
    assert refused({"code": "x"}, {}) == f"'code' {itself}"
    assert refused({"a": "x"}, {"notebook": "y"}) == f"'notebook' {itself}"
    eight = {f"i{n}": "x" for n in range(8)}
    assert len(api.resolve_spec(RunRequest(nb, inputs=eight)).inputs) == 8
    assert refused({**eight, "i8": "x"}, {}) == (
        "9 inputs: a job takes at most 8 (SageMaker allows 10 and batcat uses two); "
        "put related files under one directory"
    )
    assert refused({"a": "x"}, {"a": "y"}).startswith("'a' names both an input and an output")


def test_a_secret_is_recorded_by_its_source_and_never_also_a_parameter(here, nb, caplog):
    spec = api.resolve_spec(RunRequest(nb, secrets={"token": None}))
    assert (spec.secrets, spec.recorded_parameters["token"]) == ({"token": "env:token"}, "<secret env:token>")
    assert "token" not in spec.parameters
    with pytest.raises(
        UsageError, match="^'token' is given both as a parameter and as --secret; keep --secret$"
    ):
        api.resolve_spec(RunRequest(nb, parameters={"token": "t"}, secrets={"token": "env:T"}))
    with pytest.raises(ParameterError, match="'key'"):
        api.resolve_spec(RunRequest(nb, secrets={"key": None}))
    spec = api.resolve_spec(RunRequest(nb, secrets={"key": None}, allow_unknown_parameters=True))
    assert spec.secrets == {"key": "env:key"}


def test_a_parameter_that_looks_like_a_secret_is_warned_about_naming_the_fix(here, caplog):
    notebook = write_notebook(here / "db.ipynb", "db_password = ''\nrows = 1")
    api._warn_secret_like.cache_clear()  # once per process, which may have warned already
    with caplog.at_level(logging.WARNING, logger="batcat_nb"):
        for _ in range(2):  # a sweep's runs: one warning
            api.resolve_spec(RunRequest(str(notebook), parameters={"db_password": "hunter2", "rows": 2}))
    assert caplog.messages == [
        "parameter 'db_password' looks like a secret: its value is written into the notebook, its "
        "HTML and the MLflow run; pass it with --secret db_password (its value read from "
        "$db_password) instead"
    ]


def test_unknown_parameters_are_refused_unless_allowed(here, nb):
    with pytest.raises(ParameterError, match="'alpah'"):
        api.resolve_spec(RunRequest(nb, parameters={"alpah": 1}))
    spec = api.resolve_spec(RunRequest(nb, parameters={"alpah": 1}, allow_unknown_parameters=True))
    assert spec.parameters == {"alpah": 1}


# --------------------------------------------------------------------------- checks before anything starts


def _refused(request: RunRequest, **submit: bool) -> str:
    with pytest.raises(UsageError) as caught:
        api.submit(request, **submit)
    return str(caught.value)


def test_what_the_backend_cannot_run_is_refused_before_any_job_or_run(here, nb, fake, store, monkeypatch):
    assert _refused(RunRequest(nb, backend="fake", backend_options={"gpus": "all"})) == (
        "--gpus: the fake backend has no GPU"
    )
    assert _refused(RunRequest(nb, backend="fake"), detached=True) == (
        "a fake job ends with this command; use `batcat run`, or --backend sagemaker"
    )
    assert _refused(RunRequest(nb, backend="fake", secrets={"token": "ssm:/t"})) == (
        "--secret token=ssm:/t: ssm: is read inside SageMaker jobs only; "
        "here pass --secret token=env:VARIABLE"
    )
    monkeypatch.delenv("TOKEN_VAR", raising=False)
    assert _refused(RunRequest(nb, backend="fake", secrets={"token": "env:TOKEN_VAR"})) == (
        "--secret token=env:TOKEN_VAR: $TOKEN_VAR is not set here; export it (or name another "
        "variable: --secret token=env:VARIABLE)"
    )
    monkeypatch.setattr(FakeBackend, "secret_sources", ("ssm",), raising=False)
    assert _refused(RunRequest(nb, backend="fake", secrets={"token": None})).startswith(
        "--secret token=env:token: a fake job cannot receive a value from this machine"
    )
    assert _refused(RunRequest(nb, backend="fake", inputs={"data": "gone"})) == (
        f"input 'data': {here / 'gone'} does not exist (paths are relative to {here})"
    )
    assert fake.jobs == [] and [e.name for e in MlflowClient(store).search_experiments()] == ["Default"]


def test_a_detachable_backend_submits_detached(here, nb, fake, monkeypatch):
    monkeypatch.setattr(FakeBackend, "detachable", True, raising=False)
    assert api.submit(RunRequest(nb, backend="fake"), detached=True).attached


def test_a_submitted_job_gets_its_run_with_parameters_and_tags_then_completes(here, nb, fake, store):
    (here / "data").mkdir()
    (here / "data" / "rows.csv").write_text("a\n1\n")
    request = RunRequest(nb, backend="fake", parameters={"alpha": 0.1}, inputs={"data": "data"})
    request.tags = {"team": "x", "batcat.attempt": "mine"}
    handle = api.submit(request)
    [job] = fake.jobs
    assert job is handle and job.attached and job.spec.run_id and not job.stopped
    spec = job.spec
    run = _run(store, spec.run_id)
    assert run.info.status == RUNNING and run.info.experiment_id == spec.experiment_id
    assert MlflowClient(store).get_experiment(spec.experiment_id).name == "nb"
    assert run.data.params == {**spec.recorded_parameters, "alpha": "0.1"}
    tags = run.data.tags
    assert (
        tags["mlflow.runName"] == tags["batcat.job_name"] == spec.job_name
        and tags["batcat.backend"] == "fake"
    )
    assert (tags["batcat.kernel"], tags["batcat.notebook.path"], tags["mlflow.source.type"]) == (
        "julia-1.9",
        nb,
        "NOTEBOOK",
    )
    assert (tags["batcat.output"], tags["team"], tags["batcat.attempt"]) == (spec.output_dir, "x", "mine")
    assert tags["batcat.notebook.sha256"] == spec.notebook_sha256
    assert tags["batcat.input.data.fingerprint"].startswith("sha256:")  # what a rerun reads again
    assert (Path(spec.output_dir) / "batcat-request.json").is_file()

    result = api.wait(handle)
    assert (result.status, result.run_id, result.metrics) == (FINISHED, spec.run_id, {"score": 0.5})
    run = _run(store, spec.run_id)
    assert (run.info.status, run.data.metrics) == (FINISHED, {"score": 0.5})


def test_a_run_is_tagged_attempt_one_and_run_waits_for_the_end(here, nb, fake, store):
    result = api.run(RunRequest(nb, backend="fake"))
    assert result.status == FINISHED
    assert _run(store, result.run_id).data.tags["batcat.attempt"] == "1"


def test_a_backends_own_tracker_creates_the_run_and_completes_ended_jobs(here, nb, fake, store, monkeypatch):
    monkeypatch.setattr(FakeBackend, "tracker", AgentTracker, raising=False)
    handle = api.submit_spec(api.resolve_spec(RunRequest(nb, backend="fake")))  # a sweep's, a rerun's
    assert type(handle.tracker) is AgentTracker and handle.tracker.uri == store
    assert AgentTracker.reconciled == 1


def test_a_failure_to_complete_ended_jobs_is_a_warning_not_a_failed_run(here, nb, fake, monkeypatch, caplog):
    monkeypatch.setattr(FakeBackend, "tracker", AgentTracker, raising=False)
    monkeypatch.setattr(AgentTracker, "failure", RuntimeError("the agent is gone"))
    handle = api.submit(RunRequest(nb, backend="fake"))
    assert handle.attached and AgentTracker.reconciled == 1
    assert caplog.messages == ["could not complete the runs of ended jobs: the agent is gone"]


def test_a_run_whose_launcher_died_is_completed_by_the_next_submit(here, nb, fake, store):
    orphan = here / "batcat-runs" / "orphan"
    orphan.mkdir(parents=True)
    Manifest("orphan", status=FINISHED, metrics={"m": [(1.0, 0)]}, ended_at=5.0).write(orphan)
    lease.lease_path(orphan).touch()  # nobody holds it any more: its launcher is gone
    tags = {"batcat.backend": "local", "batcat.output": str(orphan), "batcat.job_name": "orphan"}
    run_id, _ = Tracker(store).start_run(experiment="old", run_name="orphan", params={}, tags=tags)
    api.submit(RunRequest(nb, backend="fake"))
    run = _run(store, run_id)
    assert (run.info.status, run.data.metrics) == (FINISHED, {"m": 1.0})


# --------------------------------------------------------------------------- when tracking fails


def test_a_store_that_cannot_be_reached_stops_the_job_it_started(here, nb, fake, monkeypatch):
    monkeypatch.setenv("BATCAT_TRACKING_RETRIES", "1")
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError, match=f"^the MLflow tracking server {uri} is not answering"):
        api.submit(RunRequest(nb, backend="fake", tracking_uri=uri))
    [job] = fake.jobs
    assert job.stopped and not job.attached


class _Interrupted(Tracker):
    def start_run(self, **_: object) -> tuple[str, str]:
        raise KeyboardInterrupt  # Ctrl-C while MLflow loads


def test_ctrl_c_while_the_run_is_created_stops_the_job(here, nb, fake, monkeypatch):
    monkeypatch.setattr(FakeBackend, "tracker", _Interrupted, raising=False)
    with pytest.raises(KeyboardInterrupt):
        api.submit(RunRequest(nb, backend="fake"))
    [job] = fake.jobs
    assert job.stopped and not job.attached


# --------------------------------------------------------------------------- waiting


@pytest.mark.parametrize(
    ("signal", "reason"),
    [
        (KeyboardInterrupt(), "interrupted by the user (Ctrl-C)"),
        (Stopped("SIGTERM"), "stopped: the launcher got SIGTERM"),
    ],
)
def test_an_interrupted_wait_stops_the_job_and_its_run_ends_killed_saying_why(
    here, nb, fake, store, caplog, signal, reason
):
    fake.outcomes.append(signal)
    handle = api.submit(RunRequest(nb, backend="fake"))
    result = api.wait(handle)
    assert (result.status, result.reason) == (KILLED, reason)
    run = _run(store, handle.spec.run_id)
    assert (run.info.status, run.data.tags["batcat.reason"]) == (KILLED, reason)
    assert f"stopping {handle.job_name} ({reason})..." in caplog.messages


def test_an_infrastructure_failure_is_submitted_again_under_the_same_run(here, nb, fake, store):
    fake.outcomes.append(ENGINE_FAILED)
    handle = api.submit(RunRequest(nb, backend="fake", retries=1))
    result = api.wait(handle)
    first, second = fake.jobs
    assert second.job_name == f"{first.job_name}-a2" and second.attached
    assert (second.spec.run_id, second.spec.experiment_id) == (first.spec.run_id, first.spec.experiment_id)
    assert (result.status, result.run_id) == (FINISHED, first.spec.run_id)
    run = _run(store, first.spec.run_id)
    assert (run.info.status, run.data.tags["batcat.attempt"]) == (FINISHED, "2")
    assert run.data.tags["batcat.attempt.1.reason"] == ENGINE_FAILED


@pytest.mark.parametrize(
    ("refusal", "status"), [(BackendError("fake: engine gone"), FAILED), (KeyboardInterrupt(), KILLED)]
)
def test_a_next_attempt_that_cannot_be_submitted_never_leaves_the_reopened_run_running(
    here, nb, fake, store, refusal, status
):
    fake.outcomes.append(ENGINE_FAILED)
    fake.refusal = refusal
    handle = api.submit(RunRequest(nb, backend="fake", retries=1))
    with pytest.raises(type(refusal)):
        api.wait(handle)
    run = _run(store, handle.spec.run_id)
    assert (run.info.status, run.data.tags["batcat.attempt"]) == (status, "2")
    assert run.data.tags["batcat.reason"].startswith("attempt 2 could not be submitted")


def test_without_retries_an_infrastructure_failure_ends_the_run(here, nb, fake, store):
    fake.outcomes.append(ENGINE_FAILED)
    result = api.wait(api.submit(RunRequest(nb, backend="fake")))
    assert (result.status, result.reason, len(fake.jobs)) == (FAILED, ENGINE_FAILED, 1)
    assert _run(store, result.run_id).info.status == FAILED
