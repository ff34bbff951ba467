"""`batcat run` (with tracking) against the papermill CLI (without), on a trivial notebook.

Runs alternating pairs in the same session (this machine is noisy) and prints the median of
each and their ratio. Target (issue 2): batcat at most 0.75x papermill.

With ``--against REF`` it also runs the package as it was at git ``REF`` (checked out into a
temporary worktree, with its own agent), alternating with this tree: the before/after of a
change in one session. Target (issue 12): recording a run's environment and inputs costs at
most 5% of a warm run (``--against c90fed5^1``, the commit before that recording landed).

    .venv/bin/python bench/single_run.py [--pairs 5] [--against REF]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workspace import BIN, NOTEBOOK, REPO, scratch_project


def timed(command: list[str], cwd: Path, **env: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, env={**os.environ, **env})
    return time.perf_counter() - started


@contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """The repository at ``ref`` in a temporary git worktree, removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref],
            check=True,
            capture_output=True,
        )
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)


def compare(batcat: list[str], work: Path, pairs: int, ref: str) -> None:
    """Warm runs of this tree and of ``ref``'s, alternating, each with its own agent."""
    with checkout(ref) as tree:
        before = {"PYTHONPATH": str(tree), "BATCAT_AGENT_DIR": str(work / "agents-before")}
        timed(batcat, work, **before)  # its agent starts
        before_times, after_times = [], []
        for _ in range(pairs):
            before_times.append(timed(batcat, work, **before))
            after_times.append(timed(batcat, work))
        subprocess.run(
            [str(BIN / "batcat"), "agent", "stop"],
            cwd=work,
            capture_output=True,
            env={**os.environ, **before},
        )
    b, a = statistics.median(before_times), statistics.median(after_times)
    print(f"batcat run at {ref}, median of {pairs}: {b:.3f}s")
    print(f"batcat run here,     median of {pairs}: {a:.3f}s")
    print(f"ratio here/{ref}: {a / b:.3f} (target <= 1.05)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--against", metavar="REF", help="also time the package at this git ref")
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
        if args.against:
            compare(batcat, work, args.pairs, args.against)
    b, c, p = (statistics.median(t) for t in (batcat_times, cold_times, papermill_times))
    print(f"first batcat run (agent starting): {first:.2f}s")
    print(f"papermill CLI (no tracking),    median of {args.pairs}: {p:.2f}s")
    print(f"batcat run (tracking, agent),   median of {args.pairs}: {b:.2f}s")
    print(f"batcat run (tracking, no agent) median of {args.pairs}: {c:.2f}s")
    print(f"ratio batcat/papermill: {b / p:.2f} (target <= 0.75); without the agent: {c / p:.2f}")


if __name__ == "__main__":
    main()
