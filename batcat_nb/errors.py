"""Errors batcat_nb raises.

BatcatError                 root of everything raised on purpose
├── UsageError              a user's mistake: shown as one line, no traceback
│   ├── NotebookError       missing file, not a notebook, bad nbformat
│   ├── ParameterError      unknown parameter, value of the wrong type
│   ├── KernelNotFound      the notebook's kernel is not installed
│   ├── BackendError        unknown backend, backend not available
│   ├── ConfigError         unknown config key, bad value
│   ├── WorkflowError       a workflow file's problem, naming its place (file: steps.x.needs: ...)
│   ├── ImageBuildError     the runner image could not be built
│   ├── TrackingError       the MLflow store cannot be reached or written
│   └── UnsafePath          an S3 key or a link would lead outside its destination
├── ServiceError            a service failed on its side (AWS 5xx, throttling): exit 1, try again
└── RunFailed               ``RunResult.raise_for_status()`` on a failed run
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BatcatError(Exception):
    """Root of every error batcat_nb raises on purpose."""


class UsageError(BatcatError):
    """A user's mistake; the message names the problem and the fix."""


class NotebookError(UsageError):
    """The notebook is missing or is not a valid notebook."""


class ParameterError(UsageError):
    """A parameter is unknown to the notebook or has the wrong type."""


class KernelNotFound(UsageError):
    """The notebook's kernel is not installed here."""


class BackendError(UsageError):
    """The backend is unknown or cannot be used here."""


class ConfigError(UsageError):
    """A configuration key or value is invalid."""


class WorkflowError(UsageError):
    """A workflow file is invalid; the message names the file and the place in it."""


class ImageBuildError(UsageError):
    """The runner image could not be built; the message names the step and ends with the log's tail."""


class TrackingError(UsageError):
    """The MLflow tracking store cannot be reached or written."""


class ServiceError(BatcatError):
    """A service failed on its side, even after retries; not the user's mistake: try again later."""


class UnsafePath(UsageError):
    """An S3 key (or a name from a job) would make this host write outside the destination."""


class RunFailed(BatcatError):
    """A run ended FAILED or KILLED."""

    def __init__(self, message: str, result: object) -> None:
        super().__init__(message)
        self.result = result


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
