"""A 20-combination sweep of a trivial notebook: batcat (tracked) against papermill loops.

Measures, in the same run: `batcat run --grid` with MLflow tracking, a shell loop over the
papermill CLI, and `xargs -P2` over the papermill CLI (both untracked). Prints runs per second
and the ratios. Targets (issue 6): batcat >= 10x the loop and >= 5x xargs -P2.

    .venv/bin/python bench/sweep.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "hello.ipynb"
BIN = Path(sys.executable).parent


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
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ.update(
            MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
            MLFLOW_DISABLE_TELEMETRY="true",
            BATCAT_AGENT_DIR=str(work / "agents"),
            DO_NOT_TRACK="true",
        )
        subprocess.run(  # build the new store's schema outside the measurement
            [str(BIN / "python"), "-c", "import mlflow; mlflow.MlflowClient().search_experiments()"],
            check=True,
            capture_output=True,
        )
        values = ",".join(str(i) for i in range(n))
        batcat = timed_shell(
            f"{shlex.quote(str(BIN / 'batcat'))} run {notebook} --grid alpha={values} --no-progress", work
        )
        loop = timed_shell(
            f"for i in $(seq {n}); do {papermill} {notebook} out-$i.ipynb -p alpha $i; done", work
        )
        xargs = timed_shell(
            f"seq {n} | xargs -P2 -I{{}} {papermill} {notebook} out-{{}}.ipynb -p alpha {{}}", work
        )
    for name, seconds in [
        ("batcat --grid (tracked)", batcat),
        ("papermill loop", loop),
        ("xargs -P2", xargs),
    ]:
        print(f"{name:<24} {n / seconds:5.2f} runs/s")
    print(f"batcat / loop:  {loop / batcat:.1f}x (target >= 10x)")
    print(f"batcat / xargs: {xargs / batcat:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
