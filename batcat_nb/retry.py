"""Jobs that failed for an infrastructure reason, submitted again (``--retries N``).

Infrastructure: the kernel died before its first cell, the Docker engine failed, SageMaker
reported an internal error, no capacity or a spot interruption. A notebook's own exception is
never retried. Every attempt runs under the same MLflow run: ``batcat.attempt`` counts them and
``batcat.attempt.N.reason`` says why attempt N failed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .manifest import FAILED, KILLED
from .result import interruption
from .spec import JOB_NAME_MAX

if TYPE_CHECKING:
    from .backends.base import JobHandle
    from .result import RunResult

log = logging.getLogger("batcat_nb")

KERNEL_DIED = "the kernel died before its first cell"
# Words of the reasons that backends and the worker give for failures that are not the notebook's.
_INFRASTRUCTURE = (
    KERNEL_DIED,
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "ThrottlingException",
    "CapacityError",
    "InsufficientInstanceCapacity",
    "insufficient capacity",
    "Spot interruption",
    "the Docker engine failed",
)
FIRST_DELAY = 2.0  # seconds before the second attempt; doubled for each next one
MAX_DELAY = 60.0


def is_infrastructure_failure(result: RunResult) -> bool:
    """A failure that a new attempt may not meet: never a cell's exception, a stop or a timeout."""
    if result.ok or result.error is not None or result.interrupted or result.status != "FAILED":
        return False
    return any(word in result.reason for word in _INFRASTRUCTURE)


def kernel_died_before_first_cell(exc: BaseException, executed: Path) -> bool:
    """Whether ``exc`` says the kernel died, and the executed notebook shows no cell started."""
    from nbclient.exceptions import DeadKernelError

    died = isinstance(exc, DeadKernelError) or (isinstance(exc, RuntimeError) and "Kernel died" in str(exc))
    if not died:
        return False
    try:
        cells = json.loads(executed.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return True  # not even the notebook was written
    return not any(cell.get("metadata", {}).get("papermill", {}).get("start_time") for cell in cells)


def wait_with_retries(
    handle: JobHandle,
    wait: Callable[[JobHandle], RunResult],
    resubmit: Callable[[JobHandle, str], JobHandle],
    pause: Callable[[float], str | None] = lambda seconds: time.sleep(seconds),
) -> RunResult:
    """``wait(handle)``; while it failed for an infrastructure reason and ``handle.spec.retries``
    allows, reopen its run and ``resubmit(handle, job_name)`` after a growing ``pause(seconds)``.

    ``pause`` returns why the run must stop instead (a sweep's stop), else None: the run then
    ends KILLED with that reason, without sleeping through the rest of its wait; so does an
    interruption of the launcher (Ctrl-C, SIGTERM) while it waits. A next attempt that cannot
    be submitted ends the reopened run (FAILED, or KILLED when interrupted) before its error
    goes on.
    """
    result = wait(handle)
    first_name, attempt = handle.spec.job_name, 1
    while attempt <= handle.spec.retries and is_infrastructure_failure(result):
        spec, tracker = handle.spec, handle.tracker
        if tracker is None or spec.run_id is None:
            break
        attempt += 1
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (attempt - 2))
        try:
            log.warning("%s: %s; attempt %d in %.0fs", spec.job_name, result.reason, attempt, delay)
            stopped = pause(delay)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM between attempts: no next one
            stopped = interruption(exc)
        if stopped is not None:
            tracker.fail_run(spec.run_id, KILLED, stopped)
            return replace(result, status=KILLED, reason=stopped)
        tracker.retry_run(spec.run_id, attempt, result.reason)
        try:
            handle = resubmit(handle, attempt_name(first_name, attempt))
        except BaseException as exc:  # the run was reopened: it must not stay RUNNING
            interrupted = isinstance(exc, KeyboardInterrupt)
            why = interruption(exc) if interrupted else f"{type(exc).__name__}: {exc}"
            status = KILLED if interrupted else FAILED
            tracker.fail_run(spec.run_id, status, f"attempt {attempt} could not be submitted: {why}")
            raise
        result = wait(handle)
    return result


def attempt_name(job_name: str, attempt: int) -> str:
    """A new job name per attempt (SageMaker refuses a name twice): ``<name>-a2``."""
    suffix = f"-a{attempt}"
    return job_name[: JOB_NAME_MAX - len(suffix)].rstrip("-") + suffix
