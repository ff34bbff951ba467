"""``batcat run`` end to end: a real kernel, a real MLflow store, what the user sees."""

from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pytest
from conftest import EXAMPLES, error_outputs, output_notebook, run_batcat, write_notebook

pytestmark = pytest.mark.slow


def test_train_example_records_parameters_metrics_artifacts_and_model(
    project, experiment, runs_of, mlflow_client
):
    (project / "params.yaml").write_text("seed: 7\n")
    done = run_batcat(
        "run",
        str(EXAMPLES / "train_diabetes.ipynb"),
        "-p",
        "alpha",
        "0.05",
        "-y",
        "l1_ratio: 0.25",
        "-f",
        "params.yaml",
        "-e",
        experiment,
        "--output-dir",
        "runs",
    )
    assert done.returncode == 0, done.stderr
    assert "FINISHED" in done.stdout and "mlflow run" in done.stdout and "batcat ui" in done.stdout

    executed = output_notebook(done.stdout)
    assert executed.is_file() and executed.parent.parent == project / "runs"
    injected = nbformat.read(str(executed), as_version=4).cells[2]
    assert "injected-parameters" in injected.metadata.tags
    assert "alpha = 0.05" in injected.source and "seed = 7" in injected.source

    [run] = runs_of(experiment)
    assert run.info.status == "FINISHED"
    assert run.data.params["alpha"] == "0.05"
    assert run.data.params["l1_ratio"] == "0.25"
    assert run.data.params["seed"] == "7"
    assert run.data.params["test_size"] == "0.25"  # a default the user did not give
    for metric in ("test.rmse", "test.mae", "test.r2", "train_r2"):
        assert metric in run.data.metrics, metric
    tags = run.data.tags
    assert tags["mlflow.runName"].startswith("train-diabetes-")
    assert tags["mlflow.source.name"].endswith("train_diabetes.ipynb")
    assert tags["batcat.backend"] == "local" and tags["batcat.kernel"] == "python3"
    assert len(tags["batcat.notebook.sha256"]) == 64
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"train_diabetes.ipynb", "train_diabetes.html", "batcat-manifest.json"} <= artifacts
    assert "tables" in artifacts  # the coefficients table
    models = mlflow_client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]


def test_sales_example_reads_input_directory_and_writes_output_directory(project, experiment, runs_of):
    done = run_batcat(
        "run",
        str(EXAMPLES / "sales_report.ipynb"),
        "-e",
        experiment,
        "--input",
        f"input={EXAMPLES / 'data' / 'sales'}",
        "--output",
        "output=report",
        "-p",
        "min_units",
        "2",
    )
    assert done.returncode == 0, done.stderr
    with open(project / "report" / "summary.csv") as f:
        rows = {row["region"]: row for row in csv.DictReader(f)}
    assert rows["north"]["units"] == "24"  # 12 + 3 + 9
    assert "west" not in rows  # one unit, below min_units
    [run] = runs_of(experiment)
    assert run.data.metrics["total_revenue"] == pytest.approx(
        12 * 2.5 + 7 * 2.5 + 3 * 10 + 5 * 10 + 9 * 2.5 + 4 * 10 + 15 * 2.5
    )
    # the run records where the data came from and went, not the job's internal paths
    assert run.data.params["input_dir"] == str(EXAMPLES / "data" / "sales")
    assert run.data.params["output_dir"] == str(project / "report")
    assert run.data.params["min_units"] == "2"


def logged_notebook(mlflow_client, run, name: str, where: Path) -> str:
    """The executed notebook as the MLflow run keeps it."""
    return Path(mlflow_client.download_artifacts(run.info.run_id, name, str(where))).read_text()


def test_failing_notebook_keeps_the_executed_notebook_and_marks_the_run_failed(
    project, experiment, runs_of, mlflow_client
):
    nb = write_notebook(
        project / "fails.ipynb",
        "x = 1",
        "print('before')",
        "raise ValueError('bad data')",
        "print('never')",
    )
    done = run_batcat("run", str(nb), "-e", experiment, "-p", "x", "2")
    assert done.returncode == 1
    assert "FAILED" in done.stdout and "ValueError: bad data" in done.stdout
    assert "Traceback" not in done.stderr
    executed = output_notebook(done.stdout)
    errors = error_outputs(executed)
    assert [e["ename"] for e in errors] == ["ValueError"]
    # the index as executed: papermill's error banners, added afterwards, do not count
    cells = nbformat.read(str(executed), as_version=4).cells
    cells = [c for c in cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    [failing] = [i for i, cell in enumerate(cells) if "raise ValueError" in cell.source]
    assert failing == 3  # parameters, injected parameters, print, raise
    [run] = runs_of(experiment)
    assert run.info.status == "FAILED"
    assert run.data.tags["batcat.error.ename"] == "ValueError"
    assert run.data.tags["batcat.error.evalue"] == "bad data"
    assert run.data.tags["batcat.error.cell_index"] == str(failing)
    assert f"cell {failing}: ValueError: bad data" in done.stdout
    assert "bad data" in logged_notebook(mlflow_client, run, "fails.ipynb", project / "fetched")


def test_sys_exit_zero_stops_the_notebook_without_failing(project, experiment, runs_of):
    nb = write_notebook(
        project / "early.ipynb",
        None,
        "import sys\nprint('stopping')\nsys.exit(0)",
        "raise RuntimeError('not reached')",
    )
    done = run_batcat("run", str(nb), "-e", experiment)
    assert done.returncode == 0, done.stdout + done.stderr
    assert error_outputs(output_notebook(done.stdout)) == []
    [run] = runs_of(experiment)
    assert run.info.status == "FINISHED"


def test_sys_exit_nonzero_is_a_failure(project, experiment, runs_of):
    nb = write_notebook(project / "exit3.ipynb", None, "import sys\nsys.exit(3)")
    done = run_batcat("run", str(nb), "-e", experiment)
    assert done.returncode == 1
    assert runs_of(experiment)[0].info.status == "FAILED"


def test_execution_timeout_kills_the_run(project, experiment, runs_of, mlflow_client):
    nb = write_notebook(project / "slow.ipynb", None, "print('start')", "import time\ntime.sleep(60)")
    done = run_batcat("run", str(nb), "-e", experiment, "--execution-timeout", "2")
    assert done.returncode == 1
    assert "KILLED" in done.stdout and "--execution-timeout" in done.stdout
    [run] = runs_of(experiment)
    assert run.info.status == "KILLED"
    assert "start" in output_notebook(done.stdout).read_text()  # the partial notebook is kept
    assert "start" in logged_notebook(mlflow_client, run, "slow.ipynb", project / "fetched")  # and logged


def test_run_timeout_kills_the_run(project, experiment, runs_of):
    nb = write_notebook(project / "slow.ipynb", None, "import time\ntime.sleep(60)")
    done = run_batcat("run", str(nb), "-e", experiment, "--timeout", "4")
    assert done.returncode == 1
    assert "timed out after 4s" in done.stdout
    [run] = runs_of(experiment)
    assert run.info.status == "KILLED"
    assert "timed out" in run.data.tags["batcat.reason"]


def test_notebook_without_parameters_cell_gets_parameters_injected_at_the_top(project, experiment, runs_of):
    nb = write_notebook(project / "plain.ipynb", None, "print(f'n={n}')")
    done = run_batcat("run", str(nb), "-e", experiment, "-p", "n", "5")
    assert done.returncode == 0, done.stderr
    assert "no cell tagged 'parameters'" in done.stderr
    executed = nbformat.read(str(output_notebook(done.stdout)), as_version=4)
    assert "injected-parameters" in executed.cells[0].metadata.tags
    assert "n=5" in executed.cells[1].outputs[0]["text"]
    assert runs_of(experiment)[0].data.params == {"n": "5"}


def test_allow_unknown_parameters_injects_with_a_warning(project, experiment, runs_of):
    nb = write_notebook(project / "nb.ipynb", "alpha = 0.1", "print(extra)")
    done = run_batcat("run", str(nb), "-e", experiment, "-p", "extra", "7", "--allow-unknown-parameters")
    assert done.returncode == 0, done.stderr
    assert "declares no parameter 'extra'" in done.stderr
    assert runs_of(experiment)[0].data.params["extra"] == "7"


def test_raw_parameter_stays_a_string(project, experiment):
    nb = write_notebook(project / "nb.ipynb", "label = 'a'", "assert label == '007', label")
    done = run_batcat("run", str(nb), "-e", experiment, "-r", "label", "007")
    assert done.returncode == 0, done.stdout


def test_inspect_lists_types_defaults_and_help():
    done = run_batcat("inspect", str(EXAMPLES / "train_diabetes.ipynb"))
    assert done.returncode == 0
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert "float" in lines["alpha"] and "Regularisation strength" in lines["alpha"]
    assert "0 is ridge, 1 is lasso" in lines["l1_ratio"]
    assert "int" in lines["seed"] and "(default 42)" in lines["seed"]
    assert "bool" in lines["log_model"]


def test_run_name_and_output_dir_follow_the_notebook_name(project, experiment):
    nb = write_notebook(project / "My Report.ipynb", "x = 1", "x")
    done = run_batcat("run", str(nb), "-e", experiment)
    assert done.returncode == 0, done.stderr
    executed = output_notebook(done.stdout)
    assert executed.name == "My Report.ipynb"
    assert executed.parent.name.startswith("My-Report-")
    assert (executed.parent / "My Report.html").is_file()
    assert Path(executed.parent / "batcat-job.log").is_file()


def test_git_provenance_is_tagged(project, experiment, runs_of):
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=project, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q", "-b", "feature-x")
    nb = write_notebook(project / "nb.ipynb", "x = 1", "x")
    git("add", "nb.ipynb")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "nb")
    done = run_batcat("run", str(nb), "-e", experiment)
    assert done.returncode == 0, done.stderr
    tags = runs_of(experiment)[0].data.tags
    assert tags["mlflow.source.git.commit"] == git("rev-parse", "HEAD")
    assert tags["mlflow.source.git.branch"] == "feature-x"
    assert tags["batcat.git.dirty"] == "false"
    nb.write_text(nb.read_text().replace("x = 1", "x = 2"))
    run_batcat("run", str(nb), "-e", experiment)
    assert runs_of(experiment)[0].data.tags["batcat.git.dirty"] == "true"


def test_the_summary_links_to_a_running_batcat_ui_else_names_the_command_for_that_store(
    project, experiment, tmp_path, monkeypatch
):
    import subprocess
    import time

    from conftest import BATCAT, free_port

    monkeypatch.setenv("BATCAT_CACHE_DIR", str(tmp_path / "cache"))
    tracking_uri = f"sqlite:///{tmp_path / 'other.db'}"  # not the default store: its command names it
    hello = str(EXAMPLES / "hello.ipynb")
    done = run_batcat("run", hello, "-e", experiment, "--tracking-uri", tracking_uri, "--no-progress")
    assert f"open        batcat ui --tracking-uri {tracking_uri}  (then open" in done.stdout

    port = free_port()
    ui = subprocess.Popen([BATCAT, "ui", "--port", str(port), "--tracking-uri", tracking_uri])
    try:
        records = tmp_path / "cache" / "ui"
        deadline = time.monotonic() + 120
        while not list(records.glob("*.json")):  # batcat ui records itself before its server starts
            assert ui.poll() is None and time.monotonic() < deadline, "batcat ui did not start"
            time.sleep(0.05)
        done = run_batcat("run", hello, "-e", experiment, "--tracking-uri", tracking_uri, "--no-progress")
        assert f"open        http://127.0.0.1:{port}/#/experiments/" in done.stdout, done.stdout
    finally:
        ui.terminate()
        ui.wait(30)
    done = run_batcat("run", hello, "-e", experiment, "--tracking-uri", tracking_uri, "--no-progress")
    assert "batcat ui --tracking-uri" in done.stdout  # the UI is gone: the command again
