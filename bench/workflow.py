"""Workflows: a four-step pipeline by `batcat workflow run` against the same steps one after
another with `batcat run`, in the same session, alternating (this machine is noisy).

The pipeline: make -> (double, square at once) -> combine, data passed through folders.
Target (issue 11): the workflow at least 1.6x faster than one after another on 2 cores.

Then `batcat workflow deploy` against moto (a server in this process): time and AWS calls of a
first deploy and of a no-op redeploy (the same file again) of a four-step workflow with a
schedule, an S3 trigger and a failure topic. Target: a no-op redeploy under 1 s, no write call.

    .venv/bin/python bench/workflow.py [--pairs 3] [--work 1.0] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook
from sagemaker_submit import REGION, ROLE, CallCounter, setup
from workspace import BIN, parameters_notebook, scratch_project

BATCAT = str(BIN / "batcat")
TRANSFORM = """\
import pathlib, time
time.sleep(work)  # stands for the step's own work (a query, a download, a fit)
numbers = [int(x) for x in pathlib.Path(numbers_dir, "numbers.txt").read_text().split()]
pathlib.Path(out_dir, "numbers.txt").write_text("\\n".join(str(factor * x**power) for x in numbers))"""
MAKE = 'import pathlib\npathlib.Path(out_dir, "numbers.txt").write_text("1\\n2\\n3")'
COMBINE = """\
import pathlib
read = lambda d: pathlib.Path(d, "numbers.txt").read_text().split()
pathlib.Path(out_dir, "total.txt").write_text(str(sum(int(x) for d in (a_dir, b_dir) for x in read(d))))"""
NOTEBOOKS = {
    "make": ('out_dir = "out"\nn = 3', MAKE),
    "transform": ('numbers_dir = "in"\nout_dir = "out"\npower = 1\nfactor = 1\nwork = 0.0', TRANSFORM),
    "combine": ('a_dir = "a"\nb_dir = "b"\nout_dir = "out"', COMBINE),
}
WORKFLOW = """\
name: bench
parameters: {{work: {work}}}
steps:
  make: {{notebook: make.ipynb, outputs: [out]}}
  double:
    {{notebook: transform.ipynb, inputs: {{numbers: make.out}}, outputs: [out], parameters: {{factor: 2}}}}
  square:
    {{notebook: transform.ipynb, inputs: {{numbers: make.out}}, outputs: [out], parameters: {{power: 2}}}}
  combine: {{notebook: combine.ipynb, inputs: {{a: double.out, b: square.out}}, outputs: [out]}}
"""


def write_pipeline(work: Path, seconds: float) -> Path:
    for name, (parameters, code) in NOTEBOOKS.items():
        nb = new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
        cell = new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells = [cell, new_code_cell(code)]
        nbformat.write(nb, str(work / f"{name}.ipynb"))
    path = work / "bench.yaml"
    path.write_text(WORKFLOW.format(work=seconds))
    return path


def one_after_another(work: Path, seconds: float, round_: int) -> list[list[str]]:
    """The same four steps as `batcat run` commands, each waiting for the one before."""
    d = work / f"seq-{round_}"
    common = ["--no-progress", "--experiment", "bench-sequential"]
    transform = [BATCAT, "run", "transform.ipynb", "--input", f"numbers={d}/make", "-p", "work", str(seconds)]
    return [
        [BATCAT, "run", "make.ipynb", "--output", f"out={d}/make", *common],
        [*transform, "--output", f"out={d}/double", "-p", "factor", "2", *common],
        [*transform, "--output", f"out={d}/square", "-p", "power", "2", *common],
        [BATCAT, "run", "combine.ipynb", "--input", f"a={d}/double", "--input", f"b={d}/square",
         "--output", f"out={d}/combine", *common],
    ]  # fmt: skip


def timed(commands: list[list[str]], cwd: Path) -> float:
    started = time.perf_counter()
    for command in commands:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - started


def local_pipeline(pairs: int, seconds: float) -> None:
    """`batcat workflow run` against `batcat run` one step after another."""
    with scratch_project() as work:
        pipeline = write_pipeline(work, seconds)
        workflow = [[BATCAT, "workflow", "run", str(pipeline), "--no-progress", "--max-parallel", "2"]]
        first = timed(workflow, work)  # the agent starts
        flows, sequences = [], []
        for round_ in range(pairs):
            sequences.append(timed(one_after_another(work, seconds, round_), work))
            flows.append(timed(workflow, work))
    f, s = statistics.median(flows), statistics.median(sequences)
    print(f"== local: four steps, two branches, each branch step working {seconds:.1f}s")
    print(f"first workflow run (agent starting):       {first:.2f}s")
    print(f"4 x batcat run, one after another, median of {pairs}: {s:.2f}s")
    print(f"batcat workflow run,               median of {pairs}: {f:.2f}s")
    print(f"workflow {s / f:.2f}x faster (target >= 1.6x on 2 cores)")


EXECUTION_ROLE = "arn:aws:iam::123456789012:role/batcat-bench-states"
DEPLOYED = """
name: bench
parameters: {alpha: 0.1}
schedule: "cron(0 3 * * ? *)"
on_s3: s3://bench/landing/
notify: arn:aws:sns:us-east-1:123456789012:alerts
steps:
  a: {notebook: step.ipynb, outputs: [out]}
  b: {notebook: step.ipynb, inputs: {data: a.out}, outputs: [out]}
  c: {notebook: step.ipynb, inputs: {data: a.out}, outputs: [out]}
  d: {notebook: step.ipynb, inputs: {data: b.out}, outputs: [out]}
"""


def deployed_files(work: Path) -> Path:
    parameters_notebook(work / "step.ipynb", "alpha = 0.1\ndata_dir = ''\nout_dir = ''", "print(alpha)")
    path = work / "bench.yaml"
    path.write_text(DEPLOYED)
    return path


def deploy_redeploy(path: Path, image: str, repeat: int) -> None:
    from batcat_nb.backends.sagemaker import aws, workflow_deploy, workflow_plan
    from batcat_nb.workflow.loader import load_workflow

    counter = CallCounter()
    aws.reset()
    events = aws.session(REGION).events
    events.register("before-send", counter)
    events.register("before-call", counter.started)
    events.register("after-call", counter.ended)
    options = {"role": ROLE, "s3_prefix": "s3://bench/workflows", "image": image, "region": REGION}
    config = workflow_plan.StepFunctionsConfig(execution_role=EXECUTION_ROLE)

    def deploy() -> tuple[float, list[str]]:
        started = time.perf_counter()
        plan = workflow_plan.build(load_workflow(path), options, config)
        changes = workflow_deploy.deploy(plan, lambda _: None)
        return time.perf_counter() - started, changes

    first, changes = deploy()
    first_calls, first_wait = counter.take()
    again = []
    for _ in range(repeat):
        seconds, changed = deploy()
        assert not changed, changed
        again.append(seconds)
    again_calls, again_wait = counter.take()
    print(f"first deploy (cold: imports, clients)         {first * 1000:7.0f} ms, {len(changes)} changes")
    print(f"  AWS calls: {sum(first_calls.values())} {dict(sorted(first_calls.items()))}")
    print(f"  {first_wait * 1000:.0f} ms waiting for AWS")
    print(
        f"no-op redeploy ({repeat}x), per deploy            {statistics.median(again) * 1000:7.0f} ms median"
    )
    writes = {
        k: v for k, v in again_calls.items() if not k.split(".")[1].startswith(workflow_deploy.READ_PREFIXES)
    }
    print(f"  AWS calls per deploy: {sum(again_calls.values()) / repeat:g}, writes: {writes or 'none'}")
    print(f"  {again_wait / repeat * 1000:.0f} ms waiting for AWS per deploy")


def aws_deploy(repeat: int) -> None:
    """First deploy and no-op redeploys against a moto server in this process."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from aws_fixtures import report_eventbridge_notifications  # moto's S3 answers as S3 does

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server, image = setup(work)
        report_eventbridge_notifications(setattr)
        try:
            deploy_redeploy(deployed_files(work), image, repeat)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--work", type=float, default=1.0, help="Seconds each branch step works.")
    parser.add_argument("--repeat", type=int, default=5, help="No-op redeploys measured.")
    args = parser.parse_args()
    local_pipeline(args.pairs, args.work)
    aws_deploy(args.repeat)


if __name__ == "__main__":
    main()
