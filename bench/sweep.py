"""A 20-combination sweep of a trivial notebook: batcat (tracked) against papermill loops.

Measures, in the same run: `batcat run --grid` with MLflow tracking, a shell loop over the
papermill CLI, and `xargs -P2` over the papermill CLI (both untracked). Prints runs per second
and the ratios. Targets (issue 6): batcat >= 10x the loop and >= 5x xargs -P2.

    .venv/bin/python bench/sweep.py [--runs 20]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import time
from pathlib import Path

from workspace import BIN, NOTEBOOK, scratch_project


def timed_shell(script: str, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["bash", "-c", script], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    n = args.runs
    papermill = shlex.quote(str(BIN / "papermill"))
    notebook = shlex.quote(str(NOTEBOOK))
    values = ",".join(str(i) for i in range(n))
    sweep = f"{shlex.quote(str(BIN / 'batcat'))} run {notebook} --grid alpha={values} --no-progress --rerun"
    with scratch_project() as work:
        cold = timed_shell(sweep, work)  # the agent starts with it
        warm = timed_shell(sweep, work)
        loop = timed_shell(
            f"for i in $(seq {n}); do {papermill} {notebook} o-$i.ipynb -p alpha $i; done", work
        )
        xargs = timed_shell(
            f"seq {n} | xargs -P2 -I{{}} {papermill} {notebook} o-{{}}.ipynb -p alpha {{}}", work
        )
    rows = [("batcat, agent starting", cold), ("batcat, agent warm", warm), ("papermill loop", loop)]
    for name, seconds in [*rows, ("xargs -P2 papermill", xargs)]:
        print(f"{name:<24} {n / seconds:5.2f} runs/s")
    for name, seconds in rows[:2]:
        print(f"{name}: {loop / seconds:.1f}x the loop (target >= 10x), {xargs / seconds:.1f}x xargs (>= 5x)")


if __name__ == "__main__":
    main()
