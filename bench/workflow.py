"""Workflows: a four-step pipeline by `batcat workflow run` against the same steps one after
another with `batcat run`, in the same session, alternating (this machine is noisy).

The pipeline: make -> (double, square at once) -> combine, data passed through folders.
Target (issue 11): the workflow at least 1.6x faster than one after another on 2 cores.

    .venv/bin/python bench/workflow.py [--pairs 3] [--work 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook
from workspace import BIN, scratch_project

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--work", type=float, default=1.0, help="Seconds each branch step works.")
    args = parser.parse_args()
    local_pipeline(args.pairs, args.work)
    # Further sections (the AWS deploy and no-op redeploy against moto) follow here, each printing its own.


if __name__ == "__main__":
    main()
