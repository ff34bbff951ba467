"""`batcat run` (with tracking) against the papermill CLI (without), on a trivial notebook.

Runs alternating pairs in the same session (this machine is noisy) and prints the median of
each and their ratio. Target (issue 2): batcat at most 0.75x papermill.

    .venv/bin/python bench/single_run.py [--pairs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

from workspace import BIN, NOTEBOOK, scratch_project


def timed(command: list[str], cwd: Path, **env: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, env={**os.environ, **env})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    with scratch_project() as work:
        batcat = [str(BIN / "batcat"), "run", str(NOTEBOOK), "-p", "alpha", "0.2", "--no-progress"]
        papermill = [str(BIN / "papermill"), str(NOTEBOOK), "out.ipynb", "-p", "alpha", "0.2"]
        first = timed(batcat, work)  # the agent starts
        batcat_times, cold_times, papermill_times = [], [], []
        for _ in range(args.pairs):
            papermill_times.append(timed(papermill, work))
            batcat_times.append(timed(batcat, work))
            cold_times.append(timed(batcat, work, BATCAT_AGENT="0"))
    b, c, p = (statistics.median(t) for t in (batcat_times, cold_times, papermill_times))
    print(f"first batcat run (agent starting): {first:.2f}s")
    print(f"papermill CLI (no tracking),    median of {args.pairs}: {p:.2f}s")
    print(f"batcat run (tracking, agent),   median of {args.pairs}: {b:.2f}s")
    print(f"batcat run (tracking, no agent) median of {args.pairs}: {c:.2f}s")
    print(f"ratio batcat/papermill: {b / p:.2f} (target <= 0.75); without the agent: {c / p:.2f}")


if __name__ == "__main__":
    main()
