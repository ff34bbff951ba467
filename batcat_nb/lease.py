"""Who still holds a job: a lock file beside its output directory, held shared by the launcher
and by the worker while they live, and taken exclusively by whoever reconciles a run.

The kernel drops a process's locks when it dies, however it dies (SIGKILL, OOM): a lease
that can be taken exclusively means nobody is left to complete the run, so ``batcat runs
reconcile`` (or the agent) may complete it from its manifest. The file sits beside the output
directory, not in it, so that it is never logged or uploaded as an output.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def lease_path(output_dir: str | Path) -> Path:
    output = Path(output_dir)
    return output.parent / f".{output.name}.batcat-lease"


def hold(output_dir: str | Path, create: bool = True) -> IO[bytes] | None:
    """Hold the job's lease (shared) until the returned file is closed or this process ends.

    ``create=False`` (the worker): hold it only if the launcher made one.
    """
    path = lease_path(output_dir)
    if not create and not path.exists():
        return None
    lease = open(path, "ab")  # noqa: SIM115  (held open for the life of the job)
    fcntl.flock(lease, fcntl.LOCK_SH)
    return lease


def release(held: IO[bytes], completed: bool) -> None:
    """Let go of a lease; once its run is completed the file has served its purpose."""
    if completed:
        Path(str(held.name)).unlink(missing_ok=True)
    held.close()


def wait_for_others(lease: IO[bytes]) -> None:
    """Block until no one but us holds ``lease`` (the worker of a job whose agent died)."""
    fcntl.flock(lease, fcntl.LOCK_EX)
    fcntl.flock(lease, fcntl.LOCK_SH)


@contextlib.contextmanager
def abandoned(output_dir: str | Path) -> Iterator[bool]:
    """True (and the lease held exclusively) when a lease exists and nobody holds it.

    Whoever then completes the run removes the file (``lease_path``); otherwise it stays for
    the next look.
    """
    path = lease_path(output_dir)
    try:
        lease = open(path, "rb")  # noqa: SIM115
    except OSError:
        yield False
        return
    with lease:
        try:
            fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
