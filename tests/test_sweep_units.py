"""Sweeps without notebooks: grids, sweep files, job names, the summary, resume, failures and
stops, fast enough for mutation testing (``make mutate``).

A sweep's runs go to a real SQLite MLflow store; its jobs run on ``FakeBackend``, which runs no
notebook (the sweep's logic is the point here; tests/test_sweep.py runs real ones).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import copied_store, write_notebook

from batcat_nb import api, sweeps
from batcat_nb.backends import registry
from batcat_nb.backends.base import JobHandle
from batcat_nb.errors import BackendError, UsageError
from batcat_nb.manifest import FAILED, FINISHED, KILLED, CellError, Manifest
from batcat_nb.result import INTERRUPTED, RunResult
from batcat_nb.spec import JOB_NAME_PATTERN, RunRequest

# --------------------------------------------------------------------------- grids and files


def test_grid_options_are_typed_as_p_types_them():
    assert sweeps.parse_grid(["alpha=0.1, 1", "name=a,b", "flag=True"]) == {
        "alpha": [0.1, 1],
        "name": ["a", "b"],
        "flag": [True],
    }
    assert sweeps.parse_grid(["expr=a=b"]) == {"expr": ["a=b"]}  # only the first '=' splits
    assert sweeps.parse_grid([]) == {}


@pytest.mark.parametrize("option", ["alpha", "=1,2", "alpha="])
def test_a_grid_option_without_name_or_values_is_refused(option):
    with pytest.raises(UsageError) as refused:
        sweeps.parse_grid([option])
    assert str(refused.value) == f"--grid takes NAME=V1,V2,..., got {option!r}"


def test_a_grid_name_given_twice_is_refused():
    with pytest.raises(UsageError) as refused:
        sweeps.parse_grid(["a=1", "b=2", "a=3"])
    assert str(refused.value) == "--grid a is given twice; list all its values once"


def test_combinations_run_every_value_in_the_order_given():
    assert sweeps.grid_combinations({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]


def test_a_sweep_file_takes_a_grid_then_explicit_runs(tmp_path):
    file = tmp_path / "sweep.yaml"
    file.write_text("grid:\n  a: [1, 2]\n  b: [x]\nruns:\n  - {a: 9, c: true}\n")
    assert sweeps.load_sweep_file(file) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}, {"a": 9, "c": True}]
    file.write_text(json.dumps({"grid": {"a": [1]}}))  # JSON is YAML
    assert sweeps.load_sweep_file(str(file)) == [{"a": 1}]
    file.write_text("- {a: 1}\n- {a: 2}\n")  # a bare list is the runs
    assert sweeps.load_sweep_file(file) == [{"a": 1}, {"a": 2}]
    file.write_text("runs: [{a: 1}]\ngrid:\n")  # an empty grid is no grid
    assert sweeps.load_sweep_file(file) == [{"a": 1}]


NEEDS = "needs 'grid: {name: [values]}' and/or 'runs: [{...}]'"


@pytest.mark.parametrize(
    "content, problem",
    [
        ("grid: [unclosed", "is not valid YAML: "),
        ("42", NEEDS),
        ("{}", NEEDS),
        ("grid: {a: [1]}\nextra: 1", NEEDS),
        ("grid: {a: 1}", "'grid' in {file} must map each name to a list of values"),
        ("grid: [1, 2]", "'grid' in {file} must map each name to a list of values"),
        ("runs: {a: 1}", "'runs' in {file} must be a list of name: value mappings"),
        ("runs: [{a: 1}, 2]", "'runs' in {file} must be a list of name: value mappings"),
    ],
)
def test_bad_sweep_files_are_one_line_errors(tmp_path, content, problem):
    file = tmp_path / "sweep.yaml"
    file.write_text(content)
    with pytest.raises(UsageError) as refused:
        sweeps.load_sweep_file(file)
    message = str(refused.value)
    assert "\n" not in message.split(": ", 1)[0]
    if problem.startswith("'"):
        assert message == problem.format(file=file)
    else:
        assert message.startswith(f"sweep file {file} {problem}")


def test_a_missing_sweep_file_is_named(tmp_path):
    with pytest.raises(UsageError) as refused:
        sweeps.load_sweep_file(tmp_path / "none.yaml")
    assert str(refused.value) == f"sweep file not found: {tmp_path / 'none.yaml'}"
    with pytest.raises(UsageError, match="^sweep file not found: "):
        sweeps.load_sweep_file(tmp_path)  # a directory is no file


# --------------------------------------------------------------------------- names and keys


def test_job_names_are_unique_ordered_and_valid(monkeypatch):
    names = sweeps.job_names("my notebook", 10)
    assert len(set(names)) == 10 and all(JOB_NAME_PATTERN.fullmatch(n) for n in names)
    prefix = names[0].rsplit("-", 1)[0]
    assert names == [f"{prefix}-{i:02d}" for i in range(1, 11)]  # the index padded to sort
    assert prefix.startswith("my-notebook-") and len(prefix.split("-")[-1]) == 4  # the token
    assert sweeps.job_names("nb", 9)[-1].endswith("-9") and sweeps.job_names("nb", 1)[0].endswith("-1")
    assert sweeps.job_names("nb", 2)[0].rsplit("-", 1)[0] != sweeps.job_names("nb", 2)[0].rsplit("-", 1)[0]


def test_keys_and_sweep_ids_name_what_was_run():
    assert sweeps._key({"a": "1", "b": "2"}) == sweeps._key({"b": "2", "a": "1"})
    assert sweeps._key({"a": "1"}) != sweeps._key({"a": "2"})
    assert len(sweeps._key({})) == 16 and int(sweeps._key({}), 16) >= 0
    sweep_id = sweeps._sweep_id("/nb.ipynb", {"x": 1}, [{"a": 1}])
    assert len(sweep_id) == 8 and int(sweep_id, 16) >= 0
    assert sweep_id == sweeps._sweep_id("/nb.ipynb", {"x": 1}, [{"a": 1}])
    assert sweep_id != sweeps._sweep_id("/other.ipynb", {"x": 1}, [{"a": 1}])
    assert sweep_id != sweeps._sweep_id("/nb.ipynb", {"x": 2}, [{"a": 1}])
    assert sweep_id != sweeps._sweep_id("/nb.ipynb", {"x": 1}, [{"a": 2}])
    assert sweeps._sweep_id("/nb", {"p": Path("/a")}, []) == sweeps._sweep_id("/nb", {"p": "/a"}, [])


# --------------------------------------------------------------------------- the summary


def result(name: str, status: str = FINISHED, run_id: str | None = "", **kwargs: Any) -> RunResult:
    return RunResult(
        name, status, f"run-{name}" if run_id == "" else run_id, "1", "sqlite:///x", "fake", **kwargs
    )


def test_the_summary_shows_what_varies_the_metrics_and_why_runs_failed():
    runs = [
        result("a", parameters={"x": "1", "same": "s"}, metrics={"score": 0.123456}),
        result("b", FAILED, parameters={"x": "22", "same": "s"}, reason="cell 1: E: bad"),
        result("c", KILLED, run_id=None, parameters={"x": "3", "same": "s"}, metrics={"other": 12345.6}),
    ]
    done = sweeps.SweepResult(
        "nb-sweep-1",
        "parent",
        runs,
        skipped=2,
        objective="score",
        best=runs[0],
        duration=3.04,
        failures=runs[1:],
    )
    assert done.rows() == [
        {"status": "FINISHED", "x": "1", "other": "", "score": "0.1235", "run": "run-a", "reason": ""},
        {"status": "FAILED", "x": "22", "other": "", "score": "", "run": "run-b", "reason": "cell 1: E: bad"},
        {"status": "KILLED", "x": "3", "other": "1.235e+04", "score": "", "run": "", "reason": ""},
    ]
    assert str(done).splitlines() == [
        "sweep nb-sweep-1: 3 run, 2 failed, 2 already finished, 3.0s (parent run parent)",
        "status    x   other      score   run    reason        ",
        "FINISHED  1              0.1235  run-a                ",
        "FAILED    22                     run-b  cell 1: E: bad",
        "KILLED    3   1.235e+04                               ",
        "best score=0.1235: run run-a",
    ]
    assert not done.ok and not done.interrupted
    html = done._repr_html_()
    assert html.startswith(
        "<p>sweep nb-sweep-1: 3 run, 2 failed, 2 already finished, 3.0s (parent run parent)</p>"
    )
    assert "<tr><th>status</th><th>x</th><th>other</th><th>score</th><th>run</th><th>reason</th></tr>" in html
    failed = "<td>FAILED</td><td>22</td><td></td><td></td><td>run-b</td><td>cell 1: E: bad</td>"
    assert f"</td></tr><tr>{failed}</tr><tr><td>KILLED" in html  # one row after another
    assert html.endswith("</table>")


def test_an_empty_sweep_says_so_and_an_interrupted_one_is_interrupted():
    empty = sweeps.SweepResult("nb<1>", "p", [], skipped=3)
    assert str(empty) == "sweep nb<1>: 0 run, 0 failed, 3 already finished, 0.0s (parent run p)"
    assert empty.rows() == [] and empty.ok
    assert empty._repr_html_() == "<p>sweep nb&lt;1&gt;: nothing to run</p>"
    stopped = result("a", KILLED, reason=INTERRUPTED)
    done = sweeps.SweepResult("s", "p", [stopped], failures=[stopped], objective="score")
    assert done.interrupted and str(done).splitlines()[0] == "sweep s: 1 run, 1 failed, 0.0s (parent run p)"
    assert "best" not in str(done)
    html = sweeps.SweepResult("<s>", "p", [result("a", parameters={"x": "<1>"})])._repr_html_()
    assert "<p>sweep &lt;s&gt;: 1 run" in html and "<td>run-a</td>" in html
    assert "&lt;1&gt;" not in html  # one run: nothing varies


def test_a_parameter_varies_when_runs_differ_in_it():
    runs = [result("a", parameters={"x": "1", "y": "1"}), result("b", parameters={"x": "2", "y": "1"})]
    assert sweeps._varies(runs, "x") and not sweeps._varies(runs, "y")
    runs.append(result("c", parameters={}, reason="finished, with a note"))
    assert sweeps._varies(runs, "y")  # missing is a value
    rows = sweeps.SweepResult("s", "p", runs).rows()
    assert [(row["x"], row["y"], row["reason"]) for row in rows] == [
        ("1", "1", ""),
        ("2", "1", ""),
        ("", "", ""),
    ]


# --------------------------------------------------------------------------- sweeps on a fake backend


class FakeHandle(JobHandle):
    """A job that runs no notebook: it ends as its ``mode`` parameter says, with ``score = x``.

    ``hang`` runs until cancelled; ``fail`` fails once a hanging job has started (so a
    fail-fast test knows which job it stops); ``interrupt`` sends this process a Ctrl-C."""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.cancelled = threading.Event()
        self.mode = spec.parameters.get("mode", "ok")

    def _on_attach(self) -> None:
        FakeBackend.calls.append(("attach", self.spec.job_name))

    def status(self) -> str:
        if self.mode == "interrupt" and not FakeBackend.interrupted.is_set():
            FakeBackend.interrupted.set()
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        if self.mode in ("hang", "interrupt"):
            FakeBackend.hanging.set()
            return KILLED if self.cancelled.is_set() else "RUNNING"
        if self.mode == "fail":
            FakeBackend.hanging.wait(30)
            return FAILED
        return FINISHED

    def _wait_for_exit(self, timeout: float | None) -> bool:
        return True

    def _fetch_outputs(self) -> Path:
        out = Path(self.spec.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        status = self.status()
        error = CellError(1, "AssertionError", "broken") if status == FAILED else None
        Manifest(
            self.job_name,
            status=status,
            parameters=self.spec.recorded_parameters,
            metrics={"score": [(float(self.spec.parameters.get("x", 0)), 0)]} if status == FINISHED else {},
            error=error,
            reason=str(error) if error else "",
            started_at=1.0,
            ended_at=2.0,
        ).write(out)
        return out

    def _stop(self) -> None:
        self.cancelled.set()


class FakeBackend:
    """Implements the Backend protocol with ``FakeHandle`` jobs and records what the sweep asks."""

    name = "fake"
    calls: ClassVar[list[tuple[Any, ...]]] = []
    hanging = threading.Event()
    interrupted = threading.Event()

    def validate(self, spec: Any) -> None:
        FakeBackend.calls.append(("validate", spec.job_name))
        if spec.parameters.get("mode") == "invalid":
            raise UsageError("fake cannot run mode=invalid")

    def submit(self, spec: Any) -> FakeHandle:
        if spec.parameters.get("mode") == "refuse":
            raise BackendError("fake: no capacity")
        return FakeHandle(spec)

    @contextmanager
    def concurrent(self, size: int, log_path: Path) -> Iterator[None]:
        FakeBackend.calls.append(("concurrent", size, log_path))
        yield


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory, _store_schema) -> str:
    """This module's store (``project`` points MLflow at it), copied from an empty one."""
    return copied_store(_store_schema, tmp_path_factory.mktemp("mlflow"))


@pytest.fixture
def fake(project, monkeypatch) -> type[FakeBackend]:
    monkeypatch.setattr(registry, "_targets", {**registry._targets, "fake": f"{__name__}:FakeBackend"})
    FakeBackend.calls = []
    FakeBackend.hanging.clear()
    FakeBackend.interrupted.clear()
    return FakeBackend


def sweep(
    project: Path, experiment: str, combinations: list[dict[str, Any]], progress: bool = False, **kwargs: Any
) -> sweeps.SweepResult:
    nb = project / "nb.ipynb"
    if not nb.exists():
        write_notebook(nb, "x = 0\nmode = 'ok'", "x")
    base = RunRequest(
        str(nb),
        parameters={"mode": "ok"},
        backend="fake",
        experiment=experiment,
        progress=progress,
        tags={"team": "t"},
    )
    return sweeps.run_sweep(sweeps.SweepRequest(base, combinations, **kwargs))


def children(mlflow_client, parent_id: str) -> list[Any]:
    run = mlflow_client.get_run(parent_id)
    return mlflow_client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )


def test_children_run_under_a_parent_that_records_the_best(fake, project, experiment, mlflow_client):
    done = sweep(project, experiment, [{"x": 3}, {"x": 1}, {"x": 2}], objective="score", max_parallel=2)
    assert done.ok and [r.parameters["x"] for r in done.results] == ["1", "2", "3"]  # best first
    assert done.best is done.results[0] and done.skipped == 0 and done.objective == "score"
    combinations = [{"x": 3}, {"x": 1}, {"x": 2}]
    sweep_id = sweeps._sweep_id(str(project / "nb.ipynb"), {"mode": "ok"}, combinations)
    assert done.name == f"nb-sweep-{sweep_id}"
    parent = mlflow_client.get_run(done.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == done.name
    assert parent.data.metrics == {"best.score": 1.0}
    assert parent.data.tags["batcat.sweep.best_run_id"] == done.results[0].run_id
    assert (
        parent.data.tags["batcat.sweep.best.x"] == "1" and parent.data.tags["batcat.sweep.best.mode"] == "ok"
    )
    assert json.loads(parent.data.tags["batcat.sweep.definition"]) == {
        "base": {"mode": "ok"},
        "combinations": [{"x": 3}, {"x": 1}, {"x": 2}],
    }
    kids = children(mlflow_client, done.parent_run_id)
    assert sorted(k.data.params["x"] for k in kids) == ["1", "2", "3"]
    assert all(
        k.data.tags["team"] == "t" and k.data.tags["batcat.sweep.key"] == sweeps._key(k.data.params)
        for k in kids
    )
    assert [c for c in fake.calls if c[0] == "validate"] == [
        ("validate", done.results[2].job_name)
    ]  # the first
    [concurrent] = [c for c in fake.calls if c[0] == "concurrent"]
    assert concurrent == (
        "concurrent",
        2,
        project / "batcat-runs" / f"{done.name}.log",
    )  # beside the jobs' output


def test_maximize_puts_the_highest_first(fake, project, experiment):
    done = sweep(project, experiment, [{"x": 3}, {"x": 5}, {"x": 1}], objective="score", maximize=True)
    assert [r.parameters["x"] for r in done.results] == ["5", "3", "1"]
    assert str(done).splitlines()[-1] == f"best score=5: run {done.best.run_id}"


def test_without_an_objective_runs_keep_their_order_and_nothing_is_best(
    fake, project, experiment, mlflow_client
):
    done = sweep(project, experiment, [{"x": 3}, {"x": 1}, {"x": 2}], objective="nothing-records-this")
    assert [r.parameters["x"] for r in done.results] == ["3", "1", "2"] and done.best is None
    parent = mlflow_client.get_run(done.parent_run_id)
    assert parent.data.metrics == {} and "batcat.sweep.best_run_id" not in parent.data.tags
    [concurrent] = [c for c in fake.calls if c[0] == "concurrent"]
    assert concurrent[1] == min(os.cpu_count() or 1, 3)  # no more than the cores


def test_the_sweep_shows_one_bar_counting_runs_and_failures(fake, project, experiment, capsys):
    fake.hanging.set()
    done = sweep(project, experiment, [{"mode": "fail"}, {"x": 1}], progress=True, max_parallel=1)
    bar = capsys.readouterr().err
    assert f"{done.name}: 100%" in bar and "| 2/2 [" in bar and "run/s, failed=1]" in bar
    assert all(r.status in (FAILED, FINISHED) for r in done.results)


def test_running_it_again_resumes_and_rerun_runs_everything(fake, project, experiment, mlflow_client):
    fake.hanging.set()
    first = sweep(project, experiment, [{"x": 1}, {"x": 2, "mode": "fail"}])
    assert not first.ok and [r.status for r in first.results] == [FINISHED, FAILED]
    assert (
        first.failures == [first.results[1]] and first.results[1].reason == "cell 1: AssertionError: broken"
    )
    assert mlflow_client.get_run(first.parent_run_id).info.status == "FAILED"

    again = sweep(project, experiment, [{"x": 1}, {"x": 2, "mode": "fail"}])
    assert again.parent_run_id == first.parent_run_id and again.skipped == 1
    assert [r.parameters["x"] for r in again.results] == ["2"]
    everything = sweep(project, experiment, [{"x": 1}, {"x": 2, "mode": "fail"}], rerun=True)
    assert everything.skipped == 0 and len(everything.results) == 2
    assert len(children(mlflow_client, first.parent_run_id)) == 2 + 1 + 2


def test_fail_fast_runs_nothing_more_after_a_failure(fake, project, experiment, mlflow_client):
    fake.hanging.set()  # the second job may start before the first's failure is seen: it hangs
    done = sweep(
        project, experiment, [{"mode": "fail"}, {"mode": "hang"}, {"x": 2}], fail_fast=True, max_parallel=1
    )
    reason = "stopped: an earlier combination failed (--fail-fast)"
    assert [r.status for r in done.results] == [FAILED, KILLED, KILLED]
    assert done.results[1].reason in (reason, f"not run: {reason}")
    third = done.results[2]
    assert (third.reason, third.run_id, third.backend) == (f"not run: {reason}", None, "fake")
    assert third.job_name.endswith("-3")  # the summary still names the job that never ran
    assert third.parameters == {"x": "2", "mode": "ok"} and third.tracking_uri == done.results[0].tracking_uri
    assert sorted(k.data.params["mode"] for k in children(mlflow_client, done.parent_run_id)) <= [
        "fail",
        "hang",
    ]


def test_fail_fast_cancels_the_running_jobs(fake, project, experiment, mlflow_client):
    done = sweep(project, experiment, [{"mode": "hang"}, {"mode": "fail"}], fail_fast=True, max_parallel=2)
    hung = done.results[0]
    assert (hung.status, hung.reason) == (KILLED, "stopped: an earlier combination failed (--fail-fast)")
    assert mlflow_client.get_run(hung.run_id).info.status == "KILLED"
    assert mlflow_client.get_run(done.parent_run_id).info.status == "FAILED" and not done.interrupted


def test_without_fail_fast_a_failure_stops_nothing(fake, project, experiment):
    fake.hanging.set()
    done = sweep(project, experiment, [{"mode": "fail"}, {"x": 1}], max_parallel=1)
    assert [r.status for r in done.results] == [FAILED, FINISHED]


def test_ctrl_c_stops_every_job_and_kills_the_parent(fake, project, experiment, mlflow_client):
    done = sweep(project, experiment, [{"mode": "interrupt"}, {"x": 1}], max_parallel=1)
    assert [(r.status, r.reason) for r in done.results] == [
        (KILLED, INTERRUPTED),
        (KILLED, f"not run: {INTERRUPTED}"),
    ]
    assert done.interrupted and mlflow_client.get_run(done.parent_run_id).info.status == "KILLED"


def test_a_refused_submission_stops_the_sweep_and_fails_its_parent(fake, project, experiment, mlflow_client):
    with pytest.raises(BackendError, match="^fake: no capacity$"):
        sweep(project, experiment, [{"mode": "refuse"}])
    found = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name(experiment).experiment_id],
        filter_string="tags.`batcat.sweep.id` != ''",
    )
    [parent] = found
    assert parent.info.status == "FAILED" and parent.data.tags["batcat.reason"] == "fake: no capacity"


def test_the_first_combination_is_validated_before_anything_runs(fake, project, experiment, runs_of):
    with pytest.raises(UsageError, match="^fake cannot run mode=invalid$"):
        sweep(project, experiment, [{"mode": "invalid"}, {"x": 1}])
    assert runs_of(experiment) == [] and [c[0] for c in fake.calls] == ["validate"]


def test_a_sweep_needs_combinations(fake, project, experiment):
    with pytest.raises(UsageError) as refused:
        sweep(project, experiment, [])
    assert str(refused.value) == "the sweep has no combinations: give --grid NAME=V1,V2 or --sweep FILE"


def test_follow_waits_for_the_end_and_cancels_once_stopped(fake, project):
    write_notebook(project / "nb.ipynb", "x = 0\nmode = 'ok'", "x")
    spec = api.resolve_spec(
        RunRequest(str(project / "nb.ipynb"), parameters={"mode": "hang"}, backend="fake")
    )
    stop = threading.Event()
    stop.set()
    handle = FakeHandle(spec)
    assert sweeps.watch(handle, stop, lambda: "why") == KILLED and handle.cancelled.is_set()
    ended = sweeps.follow(FakeHandle(spec), stop, lambda: "because")
    assert (ended.status, ended.reason) == (KILLED, "because")
    done = FakeHandle(spec)
    done.mode = "ok"
    assert sweeps.watch(done, threading.Event(), lambda: "no") == FINISHED and not done.cancelled.is_set()
