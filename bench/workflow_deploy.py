"""`batcat workflow deploy` against moto: time and AWS calls of a first deploy and of a no-op
redeploy (the same file again), for a four-step workflow with a schedule, an S3 trigger and a
failure topic. Target (issue 11): a no-op redeploy under 1 s, with no write call.

A moto server runs in this process on 127.0.0.1 (``sagemaker_submit.setup``); each deploy is the
whole command (load and check the file, resolve every step's request, compare, write).

    .venv/bin/python bench/workflow_deploy.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sagemaker_submit import REGION, ROLE, CallCounter, setup

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from aws_fixtures import report_eventbridge_notifications  # noqa: E402 - moto's S3 answers as S3 does

EXECUTION_ROLE = "arn:aws:iam::123456789012:role/batcat-bench-states"
WORKFLOW = """
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


def files(work: Path) -> Path:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    cell = new_code_cell("alpha = 0.1\ndata_dir = ''\nout_dir = ''")
    cell.metadata["tags"] = ["parameters"]
    nb.cells += [cell, new_code_cell("print(alpha)")]
    nbformat.write(nb, str(work / "step.ipynb"))
    path = work / "bench.yaml"
    path.write_text(WORKFLOW)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server, image = setup(work)
        report_eventbridge_notifications(setattr)
        try:
            run(files(work), image, args.repeat)
        finally:
            server.stop()


def run(path: Path, image: str, repeat: int) -> None:
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


if __name__ == "__main__":
    main()
