"""What a user asks for (RunRequest) and the fully resolved job a backend runs (JobSpec)."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .layout import NOTEBOOK_CHANNEL

JOB_NAME_MAX = 63


@dataclass
class RunRequest:
    """One run as a front end (CLI, magics, Python) describes it."""

    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # parameter -> env:VAR, ssm:/path...
    backend: str | None = None  # None: the configured default, else "local"
    experiment: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    output_dir: str | None = None
    kernel: str | None = None
    timeout: float | None = None
    execution_timeout: float | None = None
    allow_unknown_parameters: bool = False
    log_output: bool = False
    progress: bool = True
    tracking_uri: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)
    retries: int | None = None  # resubmissions after an infrastructure failure
    job_name: str | None = None  # None: one made from the notebook's name (a sweep names its own)


@dataclass
class JobSpec:
    """A run with everything resolved; JSON-serialisable so any backend can ship it."""

    job_name: str
    notebook: str  # absolute path of the source notebook
    notebook_sha256: str
    kernel: str
    backend: str
    experiment: str
    parameters: dict[str, Any]  # values to inject
    recorded_parameters: dict[str, str]  # what the run records: defaults and given values
    inputs: dict[str, str]  # channel name -> local path or s3:// URI
    outputs: dict[str, str]  # channel name -> local path or s3:// URI
    output_dir: str  # where the executed notebook lands
    tracking_uri: str
    timeout: float | None = None
    execution_timeout: float | None = None
    log_output: bool = False
    progress: bool = True
    declared_parameters: list[str] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)  # parameter -> source; never a value
    tags: dict[str, str] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)
    retries: int = 0  # resubmissions after an infrastructure failure
    run_id: str | None = None
    experiment_id: str | None = None
    # The notebook as nbformat JSON when the file itself is not what runs: a text notebook
    # (jupytext) or a rerun's recorded notebook. The job receives it in job.json.
    notebook_content: dict[str, Any] | None = None

    @property
    def notebook_file(self) -> str:
        return self.notebook.rsplit("/", 1)[-1]

    def channel_parameters(self) -> dict[str, str]:
        """Declared ``<channel>_dir`` parameters and the channel each one is filled from."""
        channels = {f"{name}_dir": f"input/{name}" for name in self.inputs}
        channels.update({f"{name}_dir": f"output/{name}" for name in self.outputs})
        return {k: v for k, v in channels.items() if k in self.declared_parameters}

    def worker_job(self) -> dict[str, Any]:
        """The job.json the worker reads: all it needs, nothing about the launcher."""
        return {
            "job_name": self.job_name,
            "notebook": self.notebook_file,
            "parameters": self.parameters,
            "channel_parameters": self.channel_parameters(),
            "secrets": self.secrets,
            "recorded_parameters": self.recorded_parameters,
            "kernel": self.kernel,
            "timeout": self.timeout,
            "execution_timeout": self.execution_timeout,
            "log_output": self.log_output,
            "progress": self.progress,
            "output_channel": NOTEBOOK_CHANNEL,
            **({"notebook_content": self.notebook_content} if self.notebook_content else {}),
        }


JOB_NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # SageMaker's


def job_name(notebook_stem: str, now: float | None = None, suffix: str | None = None) -> str:
    """``<notebook>-<YYYYmmdd-HHMMSS>-<suffix>``, valid as a SageMaker job name.

    The suffix is 6 random hex digits unless given (a sweep gives ``<token>-<index>``, unique
    within it by construction); the notebook's name is shortened to fit 63 characters.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    suffix = suffix or secrets.token_hex(3)
    stem = re.sub(r"[^a-zA-Z0-9]+", "-", notebook_stem).strip("-") or "notebook"
    stem = stem[: JOB_NAME_MAX - len(stamp) - len(suffix) - 2].rstrip("-")
    return f"{stem}-{stamp}-{suffix}"
