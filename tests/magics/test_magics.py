"""The magics in an IPython shell in this process: parsing, mistakes, jobs, runs, detection.

Remote jobs go to the SageMaker backend against a moto server whose processing jobs run the
worker in a subprocess (tests/aws_fixtures.py); local ones to real kernels. The magics inside
real kernels are in test_magics_kernel.py.
"""

from __future__ import annotations

import _thread
import importlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, REPO, write_notebook
from IPython.core.error import UsageError as IPythonUsageError
from IPython.utils.capture import capture_output

from batcat_nb import magics as magics_module
from batcat_nb.magics import BatcatMagics, name_value_pairs
from batcat_nb.magics.current_notebook import current_notebook, existing_notebook, notebook_from_servers
from batcat_nb.magics.jobs import SkippedRun
from batcat_nb.manifest import FINISHED, KILLED, RUNNING
from batcat_nb.result import INTERRUPTED, RunResult
from batcat_nb.worker import IN_JOB_ENV

HELLO = EXAMPLES / "hello.ipynb"
MAGICS_DIR = REPO / "magics"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One IPython shell for the module, its profile and history in a temporary directory."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.testing.tools import default_config

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
        shell = InteractiveShell.instance(config=default_config())
    shell.run_line_magic("load_ext", "batcat_nb")
    yield shell
    InteractiveShell.clear_instance()  # later modules see no IPython, as under plain pytest


@pytest.fixture
def magics(ip: Any, project: Path, monkeypatch: pytest.MonkeyPatch) -> BatcatMagics:
    """Fresh magics (no jobs yet)."""
    for name in (IN_JOB_ENV, "JPY_SESSION_NAME"):
        monkeypatch.delenv(name, raising=False)
    ip.user_ns.pop("__vsc_ipynb_file__", None)
    found = BatcatMagics(shell=ip, poll_interval=0.01)
    ip.register_magics(found)
    return found


@pytest.fixture
def slow(project: Path) -> Path:
    """A notebook that says it started, then runs for a minute."""
    return write_notebook(
        project / "slow.ipynb", None, "print('started', flush=True)", "import time\ntime.sleep(60)"
    )


def line(ip: Any, magic: str, text: str = "") -> Any:
    """What ``%magic text`` returns, as a cell would see it (variables expanded)."""
    return ip.run_line_magic(magic, text)


# --------------------------------------------------------------------------- %batcat_run's line


def test_p_name_equals_value_becomes_papermills_name_value_pair() -> None:
    assert name_value_pairs(["nb.ipynb", "-p", "alpha=0.1", "-r", "tag=a=b", "-p", "n", "3"]) == [
        "nb.ipynb", "-p", "alpha", "0.1", "-r", "tag", "a=b", "-p", "n", "3",
    ]  # fmt: skip
    assert name_value_pairs(["-p", "query", "x=1"]) == ["-p", "query", "x=1"]  # the value holds the "="
    assert name_value_pairs(["--", "-p", "a=1"]) == ["--", "-p", "a=1"]


def test_python_values_expand_in_the_line_and_both_parameter_forms_reach_the_run(ip, magics, experiment):
    ip.user_ns["alpha"] = 0.25
    ip.run_cell(f"result = %batcat_run {HELLO} -p alpha=$alpha -p n {{1 + 2}} -e {experiment}")
    result = ip.user_ns["result"]
    assert isinstance(result, RunResult) and result.status == FINISHED
    assert result.parameters == {"alpha": "0.25", "n": "3"}
    assert "0.75" in Path(result.output_notebook).read_text()  # alpha * n, printed by the notebook


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{nb} --bogus", "No such option '--bogus'"),
        ("{nb} --experment x", "(Did you mean one of: '--experiment'"),
        ("{nb} -p alhpa=1", "no parameter 'alhpa' (did you mean 'alpha'?)"),
        ("{nb} -p alpha", "'-p' requires 2 arguments"),
        ("missing.ipynb", "notebook not found: missing.ipynb"),
        ("{nb} --backend dockr", "unknown backend 'dockr'"),
        ("{nb} -p alpha='unclosed", "cannot read the line"),
        ("", "no NOTEBOOK given, and this kernel's notebook is unknown"),
    ],
)
def test_a_mistake_is_one_usage_error(ip, magics, text, message):
    with pytest.raises(IPythonUsageError, match=re.escape(message)):
        line(ip, "batcat_run", text.format(nb=HELLO))


def test_a_mistake_shows_one_line_and_no_traceback(ip, magics, capsys):
    ip.run_cell(f"%batcat_run {HELLO} -p alhpa=1")
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "UsageError: hello.ipynb has no parameter 'alhpa' (did you mean 'alpha'?); declared: alpha, n. "
        "Pass --allow-unknown-parameters to inject it anyway."
    ]


def test_help_lists_the_cli_options_and_the_magics_own(ip, magics, capsys):
    assert line(ip, "batcat_run", "--help") is None
    out = capsys.readouterr().out
    assert "Usage: %batcat_run [OPTIONS] NOTEBOOK" in out and "--experiment" in out and "--no-wait" in out


def test_the_configured_default_backend_is_used_when_the_line_names_none(
    ip, magics, experiment, sagemaker_env
):
    ip.config.BatcatMagics.default_backend = "sagemaker"  # c.BatcatMagics.default_backend = ...
    try:
        configured = BatcatMagics(shell=ip, poll_interval=0.01)
    finally:
        del ip.config.BatcatMagics["default_backend"]
    ip.register_magics(configured)
    assert configured.default_backend == "sagemaker"
    result = line(ip, "batcat_run", f"{HELLO} -e {experiment}")
    assert result.backend == "sagemaker" and result.status == FINISHED
    configured.default_backend = "nope"
    with pytest.raises(IPythonUsageError, match="unknown backend 'nope'"):
        line(ip, "batcat_run", f"{HELLO} -e {experiment}")


# --------------------------------------------------------------------------- jobs


def test_a_remote_job_shows_its_state_while_the_run_waits(ip, magics, experiment, sagemaker_env, capsys):
    result = line(ip, "batcat_run", f"{HELLO} -b sagemaker -e {experiment}")
    shown = [
        text.split(" on ")[0] for text in capsys.readouterr().out.splitlines() if " on sagemaker " in text
    ]
    assert result.status == FINISHED
    states = [text.removeprefix(f"{result.job_name}: ") for text in shown]
    assert states[0] == RUNNING and "InProgress" in states and states[-1] == FINISHED  # updated in place
    assert "FINISHED" in result._repr_html_() and result.job_name in str(result)
    from IPython.display import display
    from IPython.utils.capture import capture_output

    ip.execution_count += 1  # a later cell shows it again; terminals get the summary as text
    with capture_output() as later:
        display(result)
    assert later.outputs[0].data["text/plain"] == str(result)


def test_no_wait_returns_the_job_which_completes_its_run_on_its_own(
    ip, magics, experiment, runs_of, sagemaker_env
):
    job = line(ip, "batcat_run", f"{HELLO} -b sagemaker -e {experiment} --no-wait")
    assert job.job_name.startswith("hello-") and "batcat-job" in job._repr_html_()
    deadline = time.monotonic() + 60
    while runs_of(experiment)[0].info.status == RUNNING and time.monotonic() < deadline:
        time.sleep(0.2)  # nobody waits: the background completion ends the run
    assert runs_of(experiment)[0].info.status == FINISHED
    assert job.wait().status == FINISHED and job.status() == FINISHED
    assert "batcat-result" in job._repr_html_()  # once ended, the card is the summary


def test_status_logs_and_stop_find_the_sessions_jobs(
    ip, magics, experiment, sagemaker_env, slow, capsys, runs_of
):
    first = line(ip, "batcat_run", f"{slow} -b sagemaker -e {experiment} --log-output --no-wait")
    last = line(ip, "batcat_run", f"{HELLO} -b sagemaker -e {experiment} --no-wait")
    assert line(ip, "batcat_status") is last
    assert line(ip, "batcat_status", first.job_name) is first
    assert line(ip, "batcat_status", first.spec.run_id) is first
    deadline = time.monotonic() + 60
    while "started" not in first.logs():
        assert time.monotonic() < deadline, first.logs()
        time.sleep(0.3)
    assert first.status() == RUNNING and "RUNNING" in first._repr_html_()
    capsys.readouterr()
    line(ip, "batcat_logs", first.job_name)
    assert "started" in capsys.readouterr().out  # the job's CloudWatch stream
    stopped = line(ip, "batcat_stop", first.job_name)
    assert stopped.status == KILLED and stopped.reason == "stopped with %batcat_stop"
    assert {r.info.run_id: r.info.status for r in runs_of(experiment)}[first.spec.run_id] == KILLED
    assert "started" in Path(stopped.output_notebook).read_text()  # what ran before the stop
    with pytest.raises(IPythonUsageError, match="no job 'hello-nope' in this session"):
        line(ip, "batcat_status", "hello-nope")
    with pytest.raises(IPythonUsageError, match="required: job"):
        line(ip, "batcat_stop")
    assert last.wait().status == FINISHED


def test_logs_follow_prints_until_the_job_ends(ip, magics, experiment, sagemaker_env):
    job = line(ip, "batcat_run", f"{HELLO} -b sagemaker -e {experiment} --log-output --no-wait")
    with capture_output() as captured:
        line(ip, "batcat_logs", "--follow")
    assert job.status() == FINISHED
    assert "1.5" in captured.stdout  # the notebook's own output (alpha * n)
    assert captured.stdout == job.logs()  # every line, once


def test_job_magics_before_any_job_say_how_to_start_one(ip, magics):
    with pytest.raises(IPythonUsageError, match="no job started in this session yet"):
        line(ip, "batcat_status")


def test_interrupting_the_kernel_stops_the_job_and_its_run_ends_killed(
    ip, magics, experiment, sagemaker_env, slow, runs_of
):
    def interrupt_once_the_job_runs() -> None:
        """Once the job's first cell has run (its log says so), the magic is waiting for it."""
        deadline = time.monotonic() + 120
        while not any(_logged(name, "started") for name in list(sagemaker_env.requests)):
            if time.monotonic() > deadline:
                return  # the assertions below then say what went wrong
            time.sleep(0.1)  # polling the job's log, not a guess at how long anything takes
        _thread.interrupt_main()  # what the kernel's interrupt button does

    threading.Thread(target=interrupt_once_the_job_runs, daemon=True).start()
    result = line(ip, "batcat_run", f"{slow} -b sagemaker -e {experiment} --log-output")
    assert result.status == KILLED and result.reason == INTERRUPTED
    assert runs_of(experiment)[0].info.status == KILLED


def _logged(job_name: str, text: str) -> bool:
    """Whether the job's CloudWatch log (moto's) has a line containing ``text``."""
    import boto3
    from aws_fixtures import LogWriter

    logs = boto3.client("logs")
    try:
        events = logs.filter_log_events(logGroupName=LogWriter.GROUP, logStreamNamePrefix=job_name)["events"]
    except logs.exceptions.ResourceNotFoundException:
        return False
    return any(text in event["message"] for event in events)


def test_the_summary_links_to_the_run_when_the_ui_address_is_configured(ip, magics, experiment):
    magics.mlflow_ui_url = "http://127.0.0.1:5000"
    result = line(ip, "batcat_run", f"{HELLO} -e {experiment}")
    url = f"http://127.0.0.1:5000/#/experiments/{result.experiment_id}/runs/{result.run_id}"
    assert result.run_url == url and f"<a href='{url}'" in result._repr_html_()


def test_a_secret_reaches_the_notebook_and_neither_its_outputs_nor_the_summary(
    ip, magics, experiment, project, monkeypatch
):
    value = f"tok-{os.urandom(8).hex()}"
    monkeypatch.setenv("MY_TOKEN", value)
    nb = write_notebook(project / "nb.ipynb", 'api_token = ""', "print('got', api_token, len(api_token))")

    result = line(ip, "batcat_run", f"{nb} -s api_token=env:MY_TOKEN -e {experiment}")

    assert result.status == FINISHED, result.reason
    assert result.parameters["api_token"] == "<secret env:MY_TOKEN>"
    executed = Path(result.output_notebook).read_text()
    assert f"got *** {len(value)}" in executed and value not in executed
    assert value not in result._repr_html_() + str(result)


# --------------------------------------------------------------------------- inside a batch job


def test_inside_a_batch_job_the_magics_submit_nothing_and_say_so(ip, magics, monkeypatch, capsys, runs_of):
    monkeypatch.setenv(IN_JOB_ENV, "train-20261127-120102-3f9a")
    skipped = line(ip, "batcat_run", f"{HELLO} -e never-created --no-wait --not-even-an-option")
    assert isinstance(skipped, SkippedRun) and skipped.wait() is skipped and skipped.status() == "SKIPPED"
    for magic, text in [("batcat_status", ""), ("batcat_logs", "--follow"), ("batcat_stop", "")]:
        assert line(ip, magic, text) is None
    out = capsys.readouterr().out
    assert (
        "not submitting: this notebook is itself running as the batch job train-20261127-120102-3f9a" in out
    )
    assert "%batcat_stop does nothing inside the batch job" in out
    assert runs_of("never-created") == [] and len(magics.jobs) == 0


# --------------------------------------------------------------------------- %batcat_params


def test_params_lists_types_defaults_and_help(ip, magics):
    table = line(ip, "batcat_params", str(EXAMPLES / "train_diabetes.ipynb"))
    declared = [(p.name, p.type_name) for p in table.parameters]
    assert declared[:2] == [("alpha", "float"), ("l1_ratio", "float")]
    assert "0 is ridge, 1 is lasso" in str(table)
    assert "<td style='text-align:left'>l1_ratio</td>" in table._repr_html_()


def test_params_without_a_notebook_reads_the_one_jupyterlab_names(ip, magics, project, monkeypatch):
    notebook = write_notebook(project / "mine.ipynb", "rate = 0.5  # learning rate")
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))
    table = line(ip, "batcat_params")
    assert table.path == notebook and "learning rate" in str(table)
    write_notebook(project / "bare.ipynb", None, "1")
    assert "no cell tagged 'parameters'" in str(line(ip, "batcat_params", "bare.ipynb"))


# --------------------------------------------------------------------------- %batcat_runs


@pytest.fixture
def recorded_runs(mlflow_client, experiment) -> str:
    """Three finished runs with parameters and metrics, and one without the metric."""
    experiment_id = mlflow_client.create_experiment(experiment)
    for name, alpha, rmse in [
        ("a", "0.1", 50.0),
        ("b", "1.0", 60.0),
        ("c", "0.01", 45.0),
        ("d", "0.5", None),
    ]:
        run = mlflow_client.create_run(experiment_id, run_name=name)
        mlflow_client.log_param(run.info.run_id, "alpha", alpha)
        mlflow_client.log_param(run.info.run_id, "solver", "lbfgs")
        if rmse is not None:
            mlflow_client.log_metric(run.info.run_id, "test.rmse", rmse)
        mlflow_client.set_terminated(run.info.run_id, "FINISHED")
        time.sleep(0.01)  # distinct start times
    return experiment


def test_runs_table_has_a_row_per_run_and_params_and_metrics_as_columns(ip, magics, recorded_runs, capsys):
    frame = line(ip, "batcat_runs", f"--experiment {recorded_runs}")
    assert list(frame.index) == ["d", "c", "b", "a"]  # newest first
    assert list(frame.columns) == [
        "status", "start", "duration_s", "params.alpha", "params.solver", "metrics.test.rmse", "run_id",
    ]  # fmt: skip
    assert frame["params.alpha"].dtype.kind == "f" and frame["params.solver"].iloc[0] == "lbfgs"
    assert f"4 recent runs of experiment '{recorded_runs}', newest first" in capsys.readouterr().out


def test_runs_sorted_by_a_metric_put_the_best_first_and_runs_without_it_last(ip, magics, recorded_runs):
    highest = line(ip, "batcat_runs", f"-e {recorded_runs} --metric test.rmse")
    assert list(highest.index) == ["b", "a", "c", "d"]
    lowest = line(ip, "batcat_runs", f"-e {recorded_runs} -m metrics.test.rmse --ascending --last 3")
    assert list(lowest.index) == ["c", "b", "d"]  # the last three runs (d, c, b), lowest first
    with pytest.raises(
        IPythonUsageError, match=r"no metric 'test.rsme' in these runs \(did you mean 'test.rmse'\?\)"
    ):
        line(ip, "batcat_runs", f"-e {recorded_runs} --metric test.rsme")


def test_runs_of_several_experiments_side_by_side(ip, magics, recorded_runs, mlflow_client):
    other = f"{recorded_runs}-other"
    mlflow_client.create_run(mlflow_client.create_experiment(other), run_name="z")
    frame = line(ip, "batcat_runs", f"-e {recorded_runs} -e {other}")
    assert set(frame["experiment"]) == {recorded_runs, other} and len(frame) == 5


def test_runs_of_an_experiment_not_there_yet_are_none_with_a_note(ip, magics, recorded_runs, capsys):
    frame = line(ip, "batcat_runs", f"-e {recorded_runs}x --metric test.rmse")  # inside a job: not an error
    assert len(frame) == 0 and list(frame.columns) == ["status", "start", "duration_s", "run_id"]
    out = capsys.readouterr().out
    assert (
        f"no experiment '{recorded_runs}x' in the MLflow store yet (did you mean '{recorded_runs}'?)" in out
    )


def test_runs_default_to_the_experiment_named_after_this_notebook(
    ip, magics, recorded_runs, project, monkeypatch
):
    notebook = write_notebook(project / f"{recorded_runs}.ipynb", None)
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))
    assert len(line(ip, "batcat_runs")) == 4


# --------------------------------------------------------------------------- which notebook is this


def test_jupyterlab_session_name_is_this_notebook(tmp_path):
    notebook = write_notebook(tmp_path / "lab.ipynb", None)
    assert current_notebook(environ={"JPY_SESSION_NAME": str(notebook)}, ask_servers=False) == notebook


def test_an_older_servers_relative_session_path_is_found_from_the_kernels_directory(tmp_path, monkeypatch):
    notebook = write_notebook(tmp_path / "old.ipynb", None)
    monkeypatch.chdir(tmp_path)  # the server starts the kernel in the notebook's directory
    assert existing_notebook("projects/team/old.ipynb") == notebook


def test_vscode_names_this_notebook_in_the_user_namespace(tmp_path):
    notebook = write_notebook(tmp_path / "code.ipynb", None)
    other = write_notebook(tmp_path / "other.ipynb", None)

    class Shell:
        user_ns = {"__vsc_ipynb_file__": str(notebook)}

    environ = {"JPY_SESSION_NAME": str(other)}
    assert current_notebook(Shell(), environ=environ, ask_servers=False) == notebook


def test_a_console_or_a_renamed_notebook_is_not_a_notebook(tmp_path):
    for name in (str(tmp_path / "Console 1"), str(tmp_path / "renamed-since.ipynb")):
        assert current_notebook(environ={"JPY_SESSION_NAME": name}, ask_servers=False) is None


@pytest.fixture
def jupyter_server(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A stand-in Jupyter server on 127.0.0.1 that counts requests; kernel 'abc' runs nb.ipynb.

    Returns its runtime directory (with its jpserver-*.json) and the paths it was asked for.
    """
    import http.server
    import json

    notebook = write_notebook(tmp_path / "nb.ipynb", None)
    asked: list[str] = []

    class Sessions(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps([{"path": notebook.name, "kernel": {"id": "abc"}}]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sessions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    info = {"port": server.server_address[1], "token": "t", "root_dir": str(tmp_path), "base_url": "/"}
    (runtime / "jpserver-1.json").write_text(json.dumps(info))
    try:
        yield runtime, asked
    finally:
        server.shutdown()
        server.server_close()


def test_outside_any_server_session_no_server_is_asked(jupyter_server):
    runtime, asked = jupyter_server
    assert notebook_from_servers(kernel_id=None, runtime_dir=runtime) is None
    assert asked == []  # a server was there to ask, and was not asked
    assert notebook_from_servers(kernel_id="abc", runtime_dir=runtime) == runtime.parent / "nb.ipynb"
    assert asked == ["/api/sessions"]  # the same server, asked once a kernel id is known


def test_a_session_name_that_names_a_notebook_asks_no_server(jupyter_server, monkeypatch):
    runtime, asked = jupyter_server
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    module = importlib.import_module("batcat_nb.magics.current_notebook")
    monkeypatch.setattr(module, "_kernel_id", lambda: "abc")  # as in kernel 'abc'
    assert current_notebook(environ={}) == runtime.parent / "nb.ipynb"  # nothing else names it
    asked.clear()
    notebook = runtime.parent / "nb.ipynb"
    assert current_notebook(environ={"JPY_SESSION_NAME": str(notebook)}) == notebook
    assert asked == []


# --------------------------------------------------------------------------- the magics/ folder


def test_studio_lifecycle_script_installs_the_startup_file_that_loads_the_magics(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "IPYTHONDIR"}
    env.update(HOME=str(tmp_path), BATCAT_PIP="true")  # the install step is the image's business here
    done = subprocess.run(
        ["bash", str(MAGICS_DIR / "studio-lifecycle.sh")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    startup = tmp_path / ".ipython/profile_default/startup/00-batcat.py"
    assert startup.read_text() == (MAGICS_DIR / "00-batcat.py").read_text()
    check = "print(sorted(m for m in get_ipython().magics_manager.magics['line'] if m.startswith('batcat')))"
    ipython = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "-c", check], env=env, capture_output=True, text=True
    )
    assert ipython.returncode == 0, ipython.stderr
    magics = "'batcat_logs', 'batcat_params', 'batcat_rerun', 'batcat_run', 'batcat_runs', 'batcat_status'"
    assert magics + ", 'batcat_stop'" in ipython.stdout


def test_startup_file_is_silent_where_batcat_nb_is_not_installed(tmp_path):
    shutil.copy(MAGICS_DIR / "00-batcat.py", tmp_path / "startup.py")
    code = "import sys; sys.modules['batcat_nb'] = None; exec(open('startup.py').read())"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_magics_module_keeps_heavy_imports_out_of_load_time():
    code = "import sys, batcat_nb.magics; print(sorted({'mlflow', 'pandas', 'papermill'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
    assert magics_module.MAGIC_HELP.strip()


# --------------------------------------------------------------------------- text notebooks, reruns


def test_a_percent_notebook_runs_and_reruns_through_the_magics(ip, magics, experiment, mlflow_client):
    text = EXAMPLES / "sales_totals.py"
    table = line(ip, "batcat_params", str(text))
    assert [p.name for p in table.parameters] == ["input_dir", "min_units"]
    first = line(ip, "batcat_run", f"{text} -p min_units=10 -e {experiment}")
    assert first.status == FINISHED and first.metrics["revenue_total"] == 67.5
    assert Path(first.output_notebook).name == "sales_totals.ipynb"

    again = line(ip, "batcat_rerun", first.run_id)

    assert again.ok and again.result.metrics["revenue_total"] == 67.5
    assert mlflow_client.get_run(again.result.run_id).data.tags["batcat.rerun_of"] == first.run_id
    assert ("revenue_total", "equal (67.5)") in again.metric_changes()
    with pytest.raises(
        IPythonUsageError, match="the local backend runs in no image to build from environment"
    ):
        line(ip, "batcat_rerun", f"{first.run_id} --from-environment")
