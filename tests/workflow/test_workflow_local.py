"""``batcat workflow check|run``: real kernels, a real SQLite MLflow store, real files."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BATCAT, REPO, run_batcat, write_notebook

from batcat_nb import workflow

MAKE = (
    'out_dir = "out"\nn = 3',
    'import pathlib\npathlib.Path(out_dir, "numbers.txt").write_text("\\n".join(map(str, range(1, n + 1))))',
)
# A branch: waits until its sibling has started too (a rendezvous), so passing proves they ran at once.
TRANSFORM = (
    'numbers_dir = "in"\nout_dir = "out"\npower = 1\nfactor = 1\nme = ""\nsibling = ""\nrendezvous = ""',
    textwrap.dedent("""\
        import pathlib, time
        if rendezvous:
            pathlib.Path(rendezvous, me).touch()
            deadline = time.time() + 60
            while not pathlib.Path(rendezvous, sibling).exists():
                assert time.time() < deadline, f"{sibling} never ran beside {me}"
                time.sleep(0.05)
        numbers = [int(x) for x in pathlib.Path(numbers_dir, "numbers.txt").read_text().split()]
        result = "\\n".join(str(factor * x**power) for x in numbers)
        pathlib.Path(out_dir, "numbers.txt").write_text(result)"""),
)
COMBINE = (
    'a_dir = "a"\nb_dir = "b"\nout_dir = "out"',
    textwrap.dedent("""\
        import pathlib, batcat_nb
        read = lambda d: pathlib.Path(d, "numbers.txt").read_text().split()
        total = sum(int(x) for d in (a_dir, b_dir) for x in read(d))
        pathlib.Path(out_dir, "total.txt").write_text(str(total))
        batcat_nb.record("total", total)"""),
)
FAIL = ('flag = ""', 'import pathlib\nif pathlib.Path(flag).exists():\n    raise RuntimeError("flag is up")')


def notebooks(project: Path) -> None:
    write_notebook(project / "make.ipynb", *MAKE)
    write_notebook(project / "transform.ipynb", *TRANSFORM)
    write_notebook(project / "combine.ipynb", *COMBINE)
    write_notebook(project / "fail.ipynb", *FAIL)


def workflow_file(project: Path, text: str, name: str = "wf.yaml") -> Path:
    path = project / name
    path.write_text(textwrap.dedent(text))
    return path


def by_step(runs: list[Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for run in runs:
        step = run.data.tags.get("batcat.workflow.step")
        if step:
            found.setdefault(step, []).append(run)
    return found


def parents(runs: list[Any]) -> list[Any]:
    return [r for r in runs if "batcat.workflow.step" not in r.data.tags]


def step_line(stdout: str, step: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(f"{step} "))


def test_four_steps_two_branches_at_once_data_flows_and_runs_nest(
    project: Path, experiment: str, runs_of: Callable[[str], list[Any]]
) -> None:
    notebooks(project)
    (project / "meet").mkdir()
    path = workflow_file(
        project,
        """\
        name: numbers
        parameters: {n: 4}
        steps:
          make: {notebook: make.ipynb, outputs: [out], instance_type: ml.m5.xlarge, memory: 2g}
          double:
            notebook: transform.ipynb
            inputs: {numbers: make.out}
            outputs: [out]
            parameters: {factor: 2, me: double, sibling: square, rendezvous: meet}
          square:
            notebook: transform.ipynb
            inputs: {numbers: make.out}
            outputs: [out]
            parameters: {power: 2, me: square, sibling: double, rendezvous: meet}
          combine:
            notebook: combine.ipynb
            inputs: {a: double.out, b: square.out}
            outputs: {out: results}
        """,
    )
    done = run_batcat(
        "workflow", "run", str(path), "--experiment", experiment, "--max-parallel", "2", "--no-progress"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # 1..4 doubled (20) plus squared (30), through folders of this execution
    assert (project / "results" / "total.txt").read_text() == "50"
    [folder] = (project / "batcat-runs").glob("numbers-*")
    assert (folder / "make" / "out" / "numbers.txt").read_text() == "1\n2\n3\n4"
    assert (folder / "square" / "out" / "numbers.txt").read_text() == "1\n4\n9\n16"
    assert f"outputs in {folder}" in done.stdout  # make's SageMaker and Docker options did not stop it here

    runs = runs_of(experiment)
    [parent] = parents(runs)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["batcat.workflow.name"] == "numbers"
    assert parent.data.tags["batcat.workflow.execution"] == folder.name.removeprefix("numbers-")
    assert len(parent.data.tags["batcat.workflow.sha256"]) == 64
    steps = by_step(runs)
    assert sorted(steps) == ["combine", "double", "make", "square"]
    for name, [child] in steps.items():
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["mlflow.runName"].startswith(f"{name}-")
        assert child.data.tags["batcat.workflow.execution"] == parent.data.tags["batcat.workflow.execution"]
        assert f"{name} " in step_line(done.stdout, name) and child.info.run_id in done.stdout
    assert steps["make"][0].data.params["n"] == "4"  # the workflow parameter reaches the step declaring it
    assert steps["double"][0].data.params["factor"] == "2"
    assert steps["combine"][0].data.metrics["total"] == 50
    executed = steps["combine"][0].data.tags["batcat.output"]
    assert Path(executed, "combine.ipynb").is_file()


def test_a_failed_step_stops_only_the_steps_that_need_it(
    project: Path, experiment: str, runs_of: Callable[[str], list[Any]]
) -> None:
    notebooks(project)
    (project / "up").touch()
    path = workflow_file(
        project,
        f"""\
        steps:
          make: {{notebook: make.ipynb, outputs: [out]}}
          bad: {{notebook: fail.ipynb, needs: [make], parameters: {{flag: {project / "up"}}}}}
          after-bad: {{notebook: make.ipynb, needs: [bad], outputs: [out]}}
          last: {{notebook: make.ipynb, needs: [after-bad], outputs: [out]}}
          good: {{notebook: transform.ipynb, inputs: {{numbers: make.out}}, outputs: [out]}}
          after-good: {{notebook: combine.ipynb, inputs: {{a: good.out, b: make.out}}, outputs: [out]}}
        """,
    )
    done = run_batcat("workflow", "run", str(path), "--experiment", experiment, "--no-progress")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in step_line(done.stdout, "bad") and "flag is up" in step_line(done.stdout, "bad")
    assert "not run: needs bad, which failed" in step_line(done.stdout, "after-bad")
    assert "not run: needs after-bad, which did not run" in step_line(done.stdout, "last")
    assert "FINISHED" in step_line(done.stdout, "after-good")

    runs = runs_of(experiment)
    assert [p.info.status for p in parents(runs)] == ["FAILED"]
    statuses = {step: [r.info.status for r in found] for step, found in by_step(runs).items()}
    assert statuses == {
        "make": ["FINISHED"],
        "bad": ["FAILED"],
        "good": ["FINISHED"],
        "after-good": ["FINISHED"],
    }


def test_resume_reruns_only_the_unfinished_steps_and_reuses_outputs(
    project: Path, experiment: str, runs_of: Callable[[str], list[Any]]
) -> None:
    notebooks(project)
    flag = project / "up"
    flag.touch()
    path = workflow_file(
        project,
        f"""\
        steps:
          make: {{notebook: make.ipynb, outputs: [out]}}
          flaky: {{notebook: fail.ipynb, needs: [make], parameters: {{flag: {flag}}}}}
          last:
            notebook: transform.ipynb
            needs: [flaky]
            inputs: {{numbers: make.out}}
            outputs: {{out: final}}
            parameters: {{factor: 10}}
          other: {{notebook: make.ipynb, outputs: [out]}}
        """,
    )
    first = run_batcat("workflow", "run", str(path), "--experiment", experiment, "--no-progress")
    assert first.returncode == 1, first.stdout + first.stderr
    flag.unlink()

    result = workflow.run(path, experiment=experiment, resume=True, progress=False)

    assert result.ok, str(result)
    assert (project / "final" / "numbers.txt").read_text() == "10\n20\n30"  # make's output, reused
    counts = {step: len(found) for step, found in by_step(runs_of(experiment)).items()}
    assert counts == {"make": 1, "other": 1, "flaky": 2, "last": 1}
    [parent] = parents(runs_of(experiment))
    assert parent.info.status == "FINISHED" and result.parent_run_id == parent.info.run_id
    assert result["make"].reason.startswith("finished in an earlier attempt")
    assert (
        str(result)
        .splitlines()[0]
        .startswith(f"workflow wf (execution {result.execution}): 4 steps, 0 failed")
    )

    again = run_batcat("workflow", "run", str(path), "--experiment", experiment, "--resume", "--no-progress")
    assert again.returncode == 0, again.stdout + again.stderr
    assert sum(len(found) for found in by_step(runs_of(experiment)).values()) == 5  # nothing left to run


GOOD = "  a: {notebook: make.ipynb, outputs: [out]}\n"
BAD_FILES = [
    ("stpes:\n" + GOOD, "stpes", "unknown key (did you mean 'steps'?)"),
    ("steps:\n  a: {notebook: make.ipynb, needz: [b]}\n", "steps.a.needz", "did you mean 'needs'?"),
    (
        "steps:\n  a: {notebook: make.ipynb, instance_typ: ml.m5.large}\n",
        "steps.a.instance_typ",
        "did you mean 'instance_type'?",
    ),
    (
        "steps:\n  a: {notebook: make.ipynb, needs: [c]}\n  b: {notebook: make.ipynb, needs: [a]}\n"
        "  c: {notebook: make.ipynb, needs: [b]}\n",
        "steps.",
        "a cycle: ",
    ),
    (
        "steps:\n" + GOOD + "  b: {notebook: make.ipynb, needs: [aa]}\n",
        "steps.b.needs",
        "no step 'aa' (did you mean 'a'?)",
    ),
    (
        "steps:\n" + GOOD + "  b: {notebook: transform.ipynb, inputs: {numbers: b2.out}}\n",
        "steps.b.inputs.numbers",
        "no step 'b2'",
    ),
    (
        "steps:\n" + GOOD + "  b: {notebook: transform.ipynb, inputs: {numbers: a.outt}}\n",
        "steps.b.inputs.numbers",
        "step 'a' has no output 'outt' (did you mean 'out'?)",
    ),
    (
        "steps:\n  a: {notebook: make.ipynb, parameters: {nn: 2}}\n",
        "steps.a.parameters.nn",
        "make.ipynb has no parameter 'nn' (did you mean 'n'?)",
    ),
    ("steps:\n  a: {notebook: make.ipynb, parameters: {n: two}}\n", "steps.a.parameters.n", "expects int"),
    ("parameters: {factr: 2}\nsteps:\n" + GOOD, "parameters.factr", "no step's notebook declares it"),
    ("schedule: cron(0 3 * * ?)\nsteps:\n" + GOOD, "schedule", "has 5 fields, cron needs 6"),
    (
        "schedule: cron(0 3 * * * *)\nsteps:\n" + GOOD,
        "schedule",
        "exactly one of day-of-month and day-of-week must be '?'",
    ),
    ("schedule: rate(1 hours)\nsteps:\n" + GOOD, "schedule", "singular for 1"),
    ("schedule: daily\nsteps:\n" + GOOD, "schedule", "is not a schedule"),
    ("on_s3: http://bucket/landing/\nsteps:\n" + GOOD, "on_s3", "expected s3://BUCKET/PREFIX/"),
    ("notify: arn:aws:sqs:eu-west-1:123456789012:q\nsteps:\n" + GOOD, "notify", "expected an SNS topic ARN"),
    ("steps:\n  a: {notebook: nope.ipynb}\n", "steps.a.notebook", "nope.ipynb: no such notebook"),
    (
        "steps:\n  a: {notebook: make.ipynb, include: [helpers.py]}\n",
        "steps.a.include",
        "helpers.py: no such file",
    ),
    ("steps:\n  a: {notebook: make.ipynb, retries: -1}\n", "steps.a.retries", "a whole number >= 0"),
    ("steps:\n  train_model: {notebook: make.ipynb}\n", "steps.train_model", "not a valid name"),
    ("steps:\n  a: {notebook: notes.txt}\n", "steps.a.notebook", "is not a notebook"),
    ("steps: [a, b]\n", "steps", "at least one step"),
    ("steps:\n  a: {notebook: make.ipynb\n", "line ", "not valid YAML"),
]


@pytest.mark.parametrize(
    ("text", "place", "problem"), BAD_FILES, ids=[case[1] + ":" + case[2][:20] for case in BAD_FILES]
)
def test_check_names_the_place_of_each_problem_in_one_line(
    project: Path, text: str, place: str, problem: str
) -> None:
    notebooks(project)
    (project / "notes.txt").write_text("not json")
    path = workflow_file(project, text)
    done = run_batcat("workflow", "check", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"batcat: error: {path}: {place}") and problem in line, line
    assert done.stdout == ""


def test_check_of_a_good_file_and_an_unknown_run_parameter(project: Path) -> None:
    notebooks(project)
    path = workflow_file(
        project, "steps:\n" + GOOD + "  b: {notebook: transform.ipynb, inputs: {numbers: a.out}}\n"
    )
    done = run_batcat("workflow", "check", str(path))
    assert done.returncode == 0 and done.stdout.strip() == "ok: 2 steps in 2 stages (a -> b)", done.stderr
    done = run_batcat("workflow", "run", str(path), "-p", "factr", "2")
    assert done.returncode == 2 and done.stderr.strip() == (
        "batcat: error: -p factr: no step's notebook declares it (did you mean 'factor'?); "
        "declared: factor, me, n, numbers_dir, out_dir, power, rendezvous, sibling"
    )
    assert not (project / "batcat-runs").exists()  # nothing ran


def test_the_example_workflow_runs_offline(
    project: Path, experiment: str, runs_of: Callable[[str], list[Any]]
) -> None:
    example = REPO / "workflows" / "daily_sales.yaml"
    done = run_batcat("workflow", "run", str(example), "--experiment", experiment, "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    [folder] = (project / "batcat-runs").glob("daily-sales-*")
    assert (folder / "report" / "output" / "summary.csv").is_file()
    assert (folder / "best-region" / "best" / "best.csv").read_text().startswith("region,revenue\n")
    steps = by_step(runs_of(experiment))
    assert {s: [r.info.status for r in runs] for s, runs in steps.items()} == {
        "report": ["FINISHED"],
        "best-region": ["FINISHED"],
        "train": ["FINISHED"],
    }
    assert steps["best-region"][0].data.metrics["best_revenue"] > 0


def test_ctrl_c_kills_the_running_step_keeps_its_notebook_and_runs_nothing_after(
    project: Path, experiment: str, runs_of: Callable[[str], list[Any]]
) -> None:
    notebooks(project)
    write_notebook(
        project / "slow.ipynb",
        None,
        "print('first cell ran')\nopen('started', 'w')",
        "import time\ntime.sleep(120)",
    )
    path = workflow_file(
        project,
        """\
        steps:
          make: {notebook: make.ipynb, outputs: [out]}
          slow: {notebook: slow.ipynb, needs: [make]}
          after: {notebook: make.ipynb, needs: [slow], outputs: [out]}
        """,
    )
    command = [BATCAT, "workflow", "run", str(path), "--experiment", experiment, "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (project / "started").exists():  # the step's kernel is in its second cell
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert "KILLED" in step_line(stdout, "slow") and "interrupted by the user (Ctrl-C)" in step_line(
        stdout, "slow"
    )
    assert "NOT RUN" in step_line(stdout, "after")
    runs = runs_of(experiment)
    assert [p.info.status for p in parents(runs)] == ["KILLED"]
    [slow] = by_step(runs)["slow"]
    assert slow.info.status == "KILLED" and "after" not in by_step(runs)
    assert "first cell ran" in Path(slow.data.tags["batcat.output"], "slow.ipynb").read_text()
