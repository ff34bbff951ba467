"""The worker's job directory contract, fast enough for mutation testing (``make mutate``).

Real files under a ``JobLayout`` rooted in ``tmp_path`` (what ``$BATCAT_ML_ROOT`` points the
worker at), real kernels, papermill and nbconvert. A kernel costs a second or two, so the
behaviours that need one share two module-scoped runs: ``served`` (three jobs through
``--serve``) and ``mained`` (one job through ``main()`` with its own MLflow run); everything
else calls the worker's pure pieces.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import copied_store, write_notebook
from nbformat.v4 import new_code_cell, new_notebook

from batcat_nb import lease, worker
from batcat_nb.layout import CODE_CHANNEL, MESSAGE_LIMIT, ML_ROOT_ENV, JobLayout
from batcat_nb.manifest import FAILED, FINISHED, KILLED, RECORDS_NAME, CellError, Manifest
from batcat_nb.privileges import RUN_AS_ENV
from batcat_nb.record import RECORDS_ENV
from batcat_nb.redact import Masker
from batcat_nb.retry import KERNEL_DIED

# The worker owns SIGALRM and the real-time timer (--timeout): pytest-timeout must not use them.
pytestmark = pytest.mark.timeout(600, method="thread")


def lay_out(root: Path, source: Path | None = None, **job: Any) -> JobLayout:
    """A job directory as a backend stages it: the notebook in ``input/code``, ``job.json``."""
    layout = JobLayout(root)
    layout.input(CODE_CHANNEL).mkdir(parents=True)
    if source is not None:
        (layout.input(CODE_CHANNEL) / source.name).write_bytes(source.read_bytes())
    description = {
        "job_name": f"job-{root.name}",
        "notebook": source.name if source else "nb.ipynb",
        "parameters": {},
        "channel_parameters": {},
        "secrets": {},
        "recorded_parameters": {},
        "kernel": "python3",
        "timeout": None,
        "execution_timeout": None,
        "log_output": False,
        "progress": False,
        "output_channel": "notebook",
        **job,
    }
    layout.job_file.parent.mkdir(parents=True)
    layout.job_file.write_text(json.dumps(description))
    return layout


def job_of(layout: JobLayout) -> dict[str, Any]:
    return json.loads(layout.job_file.read_text())


def outputs_of(notebook: Path) -> list[str]:
    """Every stream and error text of an executed notebook, in order."""
    nb = nbformat.read(notebook, as_version=4)
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text") or f"{out.get('ename')}: {out.get('evalue')}")
    return texts


@pytest.fixture
def signals_restored():
    """Whatever a test does to the signal handlers and the timer is undone."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    yield saved
    signal.setitimer(signal.ITIMER_REAL, 0)
    for signum, handler in saved.items():
        signal.signal(signum, handler)


# --------------------------------------------------------------------------- pure pieces


def test_the_preamble_sets_the_directory_and_the_environment_as_python_literals():
    assert worker.job_preamble(None, {}) == "import os as _os; del _os"
    assert worker.job_preamble(Path("/w d"), {"A": "1", "E": "\U0001f600"}, replace=True) == (
        "import os as _os; _os.environ.clear(); _os.chdir('/w d'); "
        "_os.environ.update({'A': '1', 'E': '\U0001f600'}); del _os"
    )
    namespace: dict[str, Any] = {}
    exec(worker.job_preamble(None, {"BATCAT_PREAMBLE_TEST": "x'y"}), namespace)  # it runs
    assert os.environ.pop("BATCAT_PREAMBLE_TEST") == "x'y" and "_os" not in namespace


def test_records_become_metrics_and_artifacts_and_a_broken_line_is_skipped(tmp_path, caplog):
    assert worker.collect_records(Manifest("j"), tmp_path) is None  # no file: nothing to fold
    lines = [
        {"kind": "metric", "name": "loss", "value": "0.5", "step": 0},
        {"kind": "metric", "name": "loss", "value": 0.25, "step": "1"},
        {"kind": "artifact", "path": "plots/a.png"},
        {"kind": "metric", "name": "acc"},  # no value: skipped
    ]
    cut = '{"kind": "metric", "name": "cut' + "x" * 100  # the kernel killed mid-write
    text = "\n".join(json.dumps(line) for line in lines) + "\n\n" + cut
    (tmp_path / RECORDS_NAME).write_text(
        text + "\n" + json.dumps({"kind": "metric", "name": 7, "value": 1, "step": 2})
    )
    manifest = Manifest("j")
    with caplog.at_level(logging.WARNING, logger="batcat_nb.worker"):
        worker.collect_records(manifest, tmp_path)
    assert manifest.metrics == {"loss": [(0.5, 0), (0.25, 1)], "7": [(1.0, 2)]}
    assert manifest.artifacts == ["plots/a.png"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # the blank line is no warning
    assert warnings[0] == f"{RECORDS_NAME} line 4 skipped ('value'): " + json.dumps(lines[3])[:80]
    assert warnings[1].startswith(f"{RECORDS_NAME} line 6 skipped (Unterminated string")
    assert warnings[1].endswith("): " + cut[:80])


def test_undecodable_records_are_read_with_replacement(tmp_path):
    (tmp_path / RECORDS_NAME).write_bytes(b'{"kind": "artifact", "path": "a\xff"}\n')
    manifest = Manifest("j")
    worker.collect_records(manifest, tmp_path)
    assert manifest.artifacts == ["a\ufffd"]


def test_secret_values_leave_the_executed_notebook_and_the_manifest(tmp_path):
    nb = new_notebook(cells=[new_code_cell("print(token)")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="token is s3cr3t\n")]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    manifest = Manifest(
        "j", notebook="nb.ipynb", reason="cell 0: E: s3cr3t", error=CellError(0, "E", "s3cr3t!")
    )
    worker.mask_job(Masker(["s3cr3t"]), manifest, tmp_path)
    assert outputs_of(tmp_path / "nb.ipynb") == ["token is ***\n"]
    assert (
        manifest.reason == "cell 0: E: ***" and manifest.error is not None and manifest.error.evalue == "***!"
    )

    untouched = Manifest("j", notebook="nb.ipynb", reason="s3cr3t", error=CellError(0, "E", "s3cr3t"))
    worker.mask_job(Masker(), untouched, tmp_path)  # no secrets: nothing is rewritten
    assert untouched.reason == "s3cr3t" and untouched.error is not None and untouched.error.evalue == "s3cr3t"
    gone = Manifest("j", notebook="missing.ipynb", reason="")
    worker.mask_job(Masker(["s3cr3t"]), gone, tmp_path)  # no notebook, no reason, no error
    assert gone.reason == "" and gone.error is None and not (tmp_path / "missing.ipynb").exists()


def test_the_executed_notebook_is_rendered_as_html_beside_it(tmp_path, caplog):
    assert worker.render_html(tmp_path / "none.ipynb") is None
    write_notebook(tmp_path / "nb.ipynb", None, "print('hello')")
    assert worker.render_html(tmp_path / "nb.ipynb") == "nb.html"
    assert "print" in (tmp_path / "nb.html").read_text(encoding="utf-8")
    (tmp_path / "broken.ipynb").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="batcat_nb.worker"):
        assert worker.render_html(tmp_path / "broken.ipynb") is None
    assert not (tmp_path / "broken.html").exists()
    assert caplog.records[-1].getMessage().startswith("could not render broken.ipynb as HTML: Notebook does")


def test_the_message_keeps_the_first_kb_and_never_half_a_character(tmp_path, caplog):
    layout = JobLayout(tmp_path / "ml")
    worker._write_message(layout, "é" * MESSAGE_LIMIT)  # two bytes each
    assert layout.message_file.read_text() == "é" * (MESSAGE_LIMIT // 2)
    worker._write_message(layout, "x" + "é" * MESSAGE_LIMIT)  # the cut falls inside a character
    assert layout.message_file.read_text() == "x" + "é" * (MESSAGE_LIMIT // 2 - 1)
    worker._write_message(layout, "short")
    assert layout.message_file.read_text() == "short"
    blocked = JobLayout(tmp_path / "file")
    blocked.root.write_text("a file where the output folder should be")
    with caplog.at_level(logging.WARNING, logger="batcat_nb.worker"):
        worker._write_message(blocked, "lost")
    assert caplog.records[-1].getMessage().startswith(f"cannot write {blocked.message_file}: ")


def test_each_failure_is_described_as_a_status_and_one_line(tmp_path):
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    job = {"kernel": "r-4", "execution_timeout": 2.5}
    executed = tmp_path / "nb.ipynb"
    cell = PapermillExecutionError(4, 5, "1/0", "ZeroDivisionError", "division by zero", [])
    assert worker._describe(cell, job, executed) == (
        FAILED,
        CellError(4, "ZeroDivisionError", "division by zero"),
        "cell 4: ZeroDivisionError: division by zero",
    )
    assert worker._describe(CellTimeoutError("slow"), job, executed) == (
        KILLED,
        None,
        "a cell ran longer than 2.5s (--execution-timeout)",
    )
    assert worker._describe(NoSuchKernel("r-4"), job, executed) == (
        FAILED,
        None,
        "kernel 'r-4' is not installed where the job ran",
    )
    assert worker._describe(DeadKernelError("gone"), job, executed) == (
        FAILED,
        None,
        f"{KERNEL_DIED} (DeadKernelError: gone)",
    )
    assert worker._describe(OSError("disk full"), job, executed) == (FAILED, None, "OSError: disk full")


def test_the_run_arrives_on_stdin_only_when_the_launcher_says_so(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"MLFLOW_RUN_ID": "r1"}\n'))
    monkeypatch.delenv(worker.TRACKING_FROM_STDIN_ENV, raising=False)
    assert worker._late_tracking_env() == {}  # stdin is not read
    monkeypatch.setenv(worker.TRACKING_FROM_STDIN_ENV, "1")
    assert worker._late_tracking_env() == {"MLFLOW_RUN_ID": "r1"}
    assert worker._late_tracking_env() == {}  # stdin closed: no run
    monkeypatch.setattr(sys, "stdin", io.StringIO(" \n"))
    assert worker._late_tracking_env() == {}


def test_slow_optional_imports_are_kept_out_unless_already_loaded(monkeypatch):
    monkeypatch.delitem(sys.modules, "rfc3987_syntax", raising=False)
    worker.skip_slow_optional_imports()
    assert "rfc3987_syntax" in sys.modules and sys.modules["rfc3987_syntax"] is None
    monkeypatch.setitem(sys.modules, "rfc3987_syntax", io)
    worker.skip_slow_optional_imports()
    assert sys.modules["rfc3987_syntax"] is io


def test_a_job_description_that_cannot_be_read_is_the_message(tmp_path, monkeypatch):
    monkeypatch.setenv(ML_ROOT_ENV, str(tmp_path))
    monkeypatch.delenv(RUN_AS_ENV, raising=False)
    layout = JobLayout(tmp_path)
    assert worker.main([]) == 2
    assert layout.message_file.read_text().startswith(f"cannot read the job description {layout.job_file}: ")
    layout.job_file.parent.mkdir(parents=True)
    layout.job_file.write_text("{not json")
    assert worker.main([]) == 2
    assert layout.message_file.read_text().startswith(
        f"cannot read the job description {layout.job_file}: Expecting property name"
    )


def test_the_command_line_names_itself_and_its_one_option(capsys):
    with pytest.raises(SystemExit) as done:
        worker.main(["--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: python -m batcat_nb.worker [-h] [--serve]\n")
    assert "--serve     run jobs read from stdin\n" in usage and "execute the job laid out under" in usage


def test_a_kernel_missing_where_the_job_runs_ends_in_its_manifest_not_a_traceback(
    tmp_path, monkeypatch, store
):
    """``python -m batcat_nb.worker`` in a container whose image lacks the kernel; the launcher
    gives the run on stdin (local runs), so the job creates none itself."""
    uri = store
    layout = lay_out(
        tmp_path / "ml", write_notebook(tmp_path / "nb.ipynb", None, "1"), kernel="no-such-kernel"
    )
    monkeypatch.setenv(ML_ROOT_ENV, str(layout.root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv(worker.TRACKING_FROM_STDIN_ENV, "1")
    monkeypatch.delenv(RUN_AS_ENV, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"MLFLOW_RUN_ID": "from-the-launcher"}\n'))
    assert worker.main([]) == 1
    reason = "kernel 'no-such-kernel' is not installed where the job ran"
    assert Manifest.read(layout.output("notebook")).reason == reason
    assert layout.message_file.read_text() == reason
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


# --------------------------------------------------------------------------- a job without a kernel


def test_the_worker_lays_out_its_job_from_the_description(tmp_path):
    layout = lay_out(tmp_path, None, notebook="sub/train.ipynb", recorded_parameters={"a": "1"}, kernel="k")
    job = worker.Worker(layout, job_of(layout))
    assert job.code_dir == tmp_path / "processing" / "input" / "code"
    assert job.output_dir == tmp_path / "processing" / "output" / "notebook"
    assert job.manifest == Manifest(
        job_name=f"job-{tmp_path.name}", notebook="train.ipynb", parameters={"a": "1"}, kernel="k"
    )
    assert job.stop_requested() is True and not job.masker
    assert job._source() == str(tmp_path / "processing" / "input" / "code" / "sub/train.ipynb")


def test_a_stop_file_stops_the_job_before_it_starts_and_leaves_every_output(tmp_path, signals_restored):
    layout = lay_out(tmp_path, write_notebook(tmp_path / "nb.ipynb", None, "1"), timeout=60)
    layout.stop_file.touch()
    ran = worker.Worker(layout, job_of(layout))
    assert ran.run(worker.KernelSupply(), dict) == 1
    out = layout.output("notebook")
    manifest = Manifest.read(out)
    assert (manifest.status, manifest.reason, manifest.html) == (KILLED, "stopped before it started", None)
    assert 0 < manifest.started_at <= manifest.ended_at
    assert layout.message_file.read_text() == "stopped before it started"
    assert (out / "environment.txt").read_text().startswith("# python ")
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # the --timeout timer is gone
    assert {s: signal.getsignal(s) for s in signals_restored} == signals_restored


def test_a_kernel_that_is_not_installed_fails_the_job_with_its_name(tmp_path, signals_restored):
    layout = lay_out(tmp_path, write_notebook(tmp_path / "nb.ipynb", None, "1"), kernel="no-such-kernel")
    (layout.output("notebook") / RECORDS_NAME).parent.mkdir(parents=True)
    (layout.output("notebook") / RECORDS_NAME).write_text('{"kind": "artifact", "path": "early.txt"}\n')
    assert worker.Worker(layout, job_of(layout)).run(worker.KernelSupply(), dict) == 1
    manifest = Manifest.read(layout.output("notebook"))
    reason = "kernel 'no-such-kernel' is not installed where the job ran"
    assert (manifest.status, manifest.reason, manifest.error) == (FAILED, reason, None)
    assert manifest.artifacts == ["early.txt"]  # records are collected whatever the end
    assert layout.message_file.read_text() == reason


def test_sigterm_stops_the_job_only_when_meant_for_it_and_sigint_always(tmp_path, signals_restored):
    layout = lay_out(tmp_path, None, timeout=30)
    meant = [False]
    job = worker.Worker(layout, job_of(layout), stop_requested=lambda: meant[0])
    previous = job._install_signal_handlers()
    assert previous == signals_restored  # what run() puts back
    assert 29 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30
    signal.raise_signal(signal.SIGTERM)  # a late signal for an earlier job: ignored
    meant[0] = True
    with pytest.raises(worker.JobStopped, match="^stopped by SIGTERM$") as stopped:
        signal.raise_signal(signal.SIGTERM)
    assert stopped.value.reason == "stopped by SIGTERM"
    meant[0] = False
    with pytest.raises(worker.JobStopped, match="^stopped by SIGINT$"):
        signal.raise_signal(signal.SIGINT)
    with pytest.raises(worker.JobStopped, match=r"^timed out after 30s \(--timeout\)$"):
        signal.getsignal(signal.SIGALRM)(signal.SIGALRM, None)


def test_without_a_timeout_no_timer_is_set(tmp_path, signals_restored):
    layout = lay_out(tmp_path, None, timeout=0)
    previous = worker.Worker(layout, job_of(layout))._install_signal_handlers()
    assert set(previous) == {signal.SIGTERM, signal.SIGINT}
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


# --------------------------------------------------------------------------- jobs in real kernels

# mutmut credits a module-scoped fixture's work to the first test that uses it, and runs only
# that test for a mutant there: each kernel run below therefore has exactly one test.

PARAMETERS = "x = 1\nresults_dir = ''\ntoken = ''"
SEEN = """import fcntl, json, os, signal, sys, batcat_nb
from ipykernel import get_connection_file
os.kill(os.getppid(), signal.SIGTERM)  # a late signal for an earlier job: this one goes on
batcat_nb.record('score', x * 10)
print('token is', token)
print('to stderr', file=sys.stderr)
try:  # the worker holds the launcher's lease (shared) while the job runs
    fcntl.flock(open(lease, 'ab'), fcntl.LOCK_EX | fcntl.LOCK_NB)
    leased = False
except BlockingIOError:
    leased = True
transport = json.load(open(get_connection_file()))['transport']
seen = {'cwd': os.getcwd(), 'env': dict(os.environ), 'x': x, 'results_dir': results_dir,
        'leased': leased, 'transport': transport}
json.dump(seen, open(os.path.join(results_dir, 'seen.json'), 'w'))"""


FLAG = f"import os\nopen('flag.txt', 'w').write(str({worker.TRACKING_FROM_STDIN_ENV!r} in os.environ))"


def serve(requests: list[dict[str, Any]], replies: Path) -> int:
    """``python -m batcat_nb.worker --serve`` in this process, its stdin and stdout files."""
    saved = (sys.stdin, sys.stdout, sys.stderr, signal.getsignal(signal.SIGTERM))
    with open(replies, "w") as answers, open(replies.with_name("stray"), "w") as stray:
        sys.stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in requests))
        sys.stdout, sys.stderr = answers, stray
        try:
            return worker.serve()
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved[:3]
            signal.signal(signal.SIGTERM, saved[3])


def test_serve_runs_each_job_in_its_own_kernel_and_answers_on_its_own_line(tmp_path, monkeypatch):
    """Four jobs through one ``serve()`` (what sweeps and the agent use): one that finishes, one
    whose last cell fails with a long message holding a secret, one stopped before it starts,
    one whose cell outlives ``--execution-timeout``."""
    monkeypatch.chdir(tmp_path)  # nothing may land here
    ok = lay_out(
        tmp_path / "ok",
        write_notebook(tmp_path / "nb.ipynb", PARAMETERS + "\nlease = ''", SEEN),
        parameters={"x": 3, "lease": str(lease.lease_path(tmp_path / "ok/processing/output/notebook"))},
        channel_parameters={"results_dir": "output/results"},
        secrets={"token": "env:TOKEN"},
        progress="file",
        log_output=True,
    )
    ok.output("results").mkdir(parents=True)
    lease.lease_path(ok.output("notebook")).touch()  # the launcher's
    long = "xy" + "é" * MESSAGE_LIMIT  # after an odd prefix: the cut falls inside a character
    cells = ["print('not logged')", "b = 2", f"raise ValueError(token + {long!r})"]
    failing = new_notebook(cells=[new_code_cell(c) for c in cells])
    failing.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    bad = lay_out(
        tmp_path / "bad", None, notebook="text.py", notebook_content=failing, secrets={"token": "env:T"}
    )
    stopped = lay_out(tmp_path / "stopped", write_notebook(tmp_path / "nb.ipynb", None, "1"))
    stopped.stop_file.touch()
    stopped.output("notebook").mkdir(parents=True)  # left by an earlier attempt
    slow = lay_out(
        tmp_path / "slow",
        write_notebook(tmp_path / "slow.ipynb", None, FLAG, "import threading\nthreading.Event().wait()"),
        execution_timeout=1,
    )
    description = job_of(slow)
    del description["progress"]  # a job.json without it: papermill's own bar, in the job's log
    slow.job_file.write_text(json.dumps(description))
    secret = {"BATCAT_SECRET_token": "s3cr3t"}
    requests = [
        {"root": str(ok.root), "env": {"FROM_LAUNCHER": "yes", **secret}, "replace_env": True},
        {"root": str(bad.root), "env": secret},
        {"root": str(stopped.root)},
        {"root": str(slow.root)},
    ]
    monkeypatch.setenv(worker.TRACKING_FROM_STDIN_ENV, "1")  # the worker's, not the kernels'
    assert serve(requests, tmp_path / "replies") == 0
    replies = [json.loads(line) for line in (tmp_path / "replies").read_text().splitlines()]
    assert replies == [
        {"root": r["root"], "exit": code} for r, code in zip(requests, [0, 1, 1, 1], strict=True)
    ]
    check_finished(ok)
    check_failed(bad, long)
    check_stopped(stopped)
    manifest = Manifest.read(slow.output("notebook"))
    assert (manifest.status, manifest.reason) == (KILLED, "a cell ran longer than 1s (--execution-timeout)")
    assert "Executing: " in (slow.output("notebook") / worker.JOB_LOG_NAME).read_text()
    assert not slow.progress_file.exists()
    assert (slow.input(CODE_CHANNEL) / "flag.txt").read_text() == "False"
    assert sorted(os.listdir(tmp_path)) == [
        "bad",
        "nb.ipynb",
        "ok",
        "replies",
        "slow",
        "slow.ipynb",
        "stopped",
        "stray",
    ]


def check_finished(ok: JobLayout) -> None:
    """Its parameters, channels, directory and only its own environment; the secret masked."""
    out = ok.output("notebook")
    manifest = Manifest.read(out)
    assert (manifest.status, manifest.reason, manifest.error) == (FINISHED, "", None)
    assert manifest.metrics == {"score": [(30.0, 0)]} and manifest.html == "nb.html"
    seen = json.loads((ok.output("results") / "seen.json").read_text())
    assert seen["x"] == 3 and seen["results_dir"] == str(ok.output("results"))
    assert seen["cwd"] == str(ok.input(CODE_CHANNEL))
    assert seen["env"] == {  # the secret's variable was popped by its injected parameter
        "FROM_LAUNCHER": "yes",
        RECORDS_ENV: str(out / RECORDS_NAME),
        worker.IN_JOB_ENV: f"job-{ok.root.name}",
    }
    assert "token is ***\n" in outputs_of(out / "nb.ipynb")  # the secret's value is masked
    assert "s3cr3t" not in (out / "nb.html").read_text()
    assert ok.progress_file.read_text() == "3 3"  # the launcher draws the bar from it
    job_log = (out / worker.JOB_LOG_NAME).read_text()
    assert "token is ***" in job_log and "to stderr" in job_log  # --log-output, to the job log
    assert "Executing" not in job_log  # the launcher draws the bar: none here
    assert seen["leased"] and seen["transport"] == "ipc"  # the kernel this worker started, no TCP
    assert not lease.lease_path(ok.output("results")).exists()
    assert (out / "environment.txt").read_text().startswith("# python ")
    assert not ok.message_file.exists()


def check_failed(bad: JobLayout, long: str) -> None:
    """The failing cell's index, its message cut to the limit, the notebook from job.json."""
    out = bad.output("notebook")
    manifest = Manifest.read(out)
    assert manifest.notebook == "text.ipynb"  # the notebook given in job.json, stored as .ipynb
    assert manifest.status == FAILED and manifest.error is not None
    index = manifest.error.cell_index  # the secret's injected parameters cell comes first
    assert manifest.error == CellError(index, "ValueError", "***" + long)  # the secret masked
    assert manifest.reason == f"cell {index}: ValueError: ***{long}"
    executed = nbformat.read(out / "text.ipynb", as_version=4).cells  # papermill's banner first
    failed = [c.source for c in executed if any(o["output_type"] == "error" for o in c.get("outputs", []))]
    assert failed == [f"raise ValueError(token + {long!r})"]
    ran = [c for c in executed if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    assert ran[index].source == failed[0]  # the index counts the cells run, papermill's banners aside
    message = bad.message_file.read_text()
    assert message == manifest.reason.encode()[:MESSAGE_LIMIT].decode(errors="ignore")
    assert len(message.encode()) == MESSAGE_LIMIT - 1  # the cut fell inside an 'é'
    assert not bad.progress_file.exists()  # no launcher bar asked for: no progress file anywhere
    assert os.listdir(bad.input(CODE_CHANNEL)) == []  # papermill runs the job from its code directory
    assert (out / worker.JOB_LOG_NAME).read_text() == ""  # no --log-output: nothing is printed


def check_stopped(stopped: JobLayout) -> None:
    manifest = Manifest.read(stopped.output("notebook"))
    assert (manifest.status, manifest.reason) == (KILLED, "stopped before it started")
    assert stopped.message_file.read_text() == "stopped before it started"


def test_kernels_are_started_ahead_and_each_used_once():
    supply = worker.KernelSupply(keep_spare=True)
    supply.prepare("python3")
    prepared = supply._spare
    supply.prepare("python3")  # already there: not another
    assert supply._spare is prepared
    taken = supply.take("python3")
    spare = supply._spare
    try:
        assert taken is prepared and spare is not None and spare is not taken
        assert spare.kernel_name == "python3" and spare.is_alive
    finally:
        worker._shutdown_kernel(taken)
        supply.close()
    assert supply._spare is None and not spare.has_kernel
    assert not Path(spare.ip).parent.exists()  # its private socket directory is gone
    supply.close()  # twice is fine


MAINED = """import os, batcat_nb
batcat_nb.record('twice', x * 2)
open('run-id.txt', 'w').write(os.environ['MLFLOW_RUN_ID'] + ' ' + os.environ['BATCAT_TEST_INHERITED'])"""


@pytest.fixture(scope="module")
def mained(tmp_path_factory, _store_schema):
    """``python -m batcat_nb.worker`` in this process: a deployed step's job, which creates and
    completes its own MLflow run (a real SQLite store) since no launcher gives it one."""
    base = tmp_path_factory.mktemp("main")
    layout = lay_out(
        base / "ml",
        write_notebook(base / "nb.ipynb", "x = 1", MAINED),
        parameters={"x": 4},
        recorded_parameters={"x": "4"},
    )
    uri = copied_store(_store_schema, base)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ML_ROOT_ENV, str(layout.root))
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "worker-main")
        patch.setenv("BATCAT_TEST_INHERITED", "kept")  # the kernel keeps the worker's environment
        for name in (RUN_AS_ENV, "MLFLOW_RUN_ID", worker.TRACKING_FROM_STDIN_ENV):
            patch.delenv(name, raising=False)
        code = worker.main([])
    return {"code": code, "layout": layout, "uri": uri}


def test_a_job_without_a_launcher_records_its_own_run(mained):
    from mlflow.tracking import MlflowClient

    assert mained["code"] == 0
    manifest = Manifest.read(mained["layout"].output("notebook"))
    assert manifest.status == FINISHED and manifest.metrics == {"twice": [(8.0, 0)]}
    client = MlflowClient(mained["uri"])
    experiment = client.get_experiment_by_name("worker-main")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics == {"twice": 8.0}
    assert run.data.tags["batcat.job_name"] == f"job-{mained['layout'].root.name}"
    assert (mained["layout"].input(CODE_CHANNEL) / "run-id.txt").read_text() == f"{run.info.run_id} kept"
    assert "nb.ipynb" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert not mained["layout"].message_file.exists()
