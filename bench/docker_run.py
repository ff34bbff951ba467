"""`batcat run --backend docker` against a local `batcat run` of the same trivial notebook.

The runner image is built first (not measured). Runs alternate local/docker in the same session
(this machine is noisy) and the script prints the median of each, their ratio, and the time of
a no-op `batcat build`. Targets (issue 3): docker at most 1.5x local; no-op rebuild under 1 s.

    .venv/bin/python bench/docker_run.py [--pairs 5] [--base-image IMAGE] [--requirements FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from workspace import BIN, NOTEBOOK, scratch_project


def batcat(*args: str) -> list[str]:
    return [str(BIN / "batcat"), *args]


def timed(command: list[str], cwd: Path, **env: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[1:])} failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--base-image", default=os.environ.get("BATCAT_DOCKER_BASE_IMAGE"))
    parser.add_argument("--requirements", default=None, help="default: an empty requirements file")
    args = parser.parse_args()
    with scratch_project() as work:
        requirements = Path(args.requirements or work / "requirements.txt").resolve()
        if not args.requirements:
            requirements.write_text("")
        build = batcat("build", "--requirements", str(requirements))
        if args.base_image:
            build += ["--base-image", args.base_image]
        subprocess.run(build, cwd=work, check=True)  # the image exists from here on
        noop_builds = [timed(build, work) for _ in range(3)]
        local = batcat("run", str(NOTEBOOK), "-p", "alpha", "0.2", "--no-progress")
        docker = [*local, "--backend", "docker"]
        env = {"BATCAT_DOCKER_REQUIREMENTS": str(requirements)}
        if args.base_image:
            env["BATCAT_DOCKER_BASE_IMAGE"] = args.base_image
        first_local, first_docker = timed(local, work), timed(docker, work, **env)  # agents start
        local_times, cold_times, docker_times, docker_cold = [], [], [], []
        for _ in range(args.pairs):
            local_times.append(timed(local, work))
            docker_times.append(timed(docker, work, **env))
            cold_times.append(timed(local, work, BATCAT_AGENT="0"))
            docker_cold.append(timed(docker, work, BATCAT_AGENT="0", **env))
    lo, dk, lc, dc = (statistics.median(t) for t in (local_times, docker_times, cold_times, docker_cold))
    print(f"first runs (agents starting): local {first_local:.2f}s, docker {first_docker:.2f}s")
    print(f"local run,  warm agent, median of {args.pairs}: {lo:.2f}s")
    print(f"docker run, warm agent, median of {args.pairs}: {dk:.2f}s")
    print(f"local run,  no agent,   median of {args.pairs}: {lc:.2f}s")
    print(f"docker run, no agent,   median of {args.pairs}: {dc:.2f}s")
    print(f"ratio docker/local: {dk / lo:.2f} with the agent, {dc / lc:.2f} without (target <= 1.5)")
    print(f"no-op `batcat build`: median {statistics.median(noop_builds):.2f}s (target < 1 s)")


if __name__ == "__main__":
    main()
