"""Where things live in a job: SageMaker Processing's ``/opt/ml`` layout, or a local copy of it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ML_ROOT_ENV = "BATCAT_ML_ROOT"
CONTAINER_ROOT = Path("/opt/ml")

CODE_CHANNEL = "code"  # the notebook and the files included beside it
JOB_CHANNEL = "batcat"  # job.json: what the worker runs, parameters included
NOTEBOOK_CHANNEL = "notebook"  # the executed notebook, its HTML and the run manifest
RESERVED_CHANNELS = frozenset({CODE_CHANNEL, JOB_CHANNEL, NOTEBOOK_CHANNEL})

MESSAGE_LIMIT = 1024  # SageMaker keeps the first KB of /opt/ml/output/message as the ExitMessage


@dataclass(frozen=True)
class JobLayout:
    """The directories of one job, rooted at ``/opt/ml`` in a container."""

    root: Path

    @classmethod
    def current(cls) -> JobLayout:
        """The layout the worker runs in: ``$BATCAT_ML_ROOT`` or ``/opt/ml``."""
        return cls(Path(os.environ.get(ML_ROOT_ENV, CONTAINER_ROOT)))

    def input(self, name: str) -> Path:
        return self.root / "processing" / "input" / name

    def output(self, name: str) -> Path:
        return self.root / "processing" / "output" / name

    @property
    def job_file(self) -> Path:
        return self.input(JOB_CHANNEL) / "job.json"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def message_file(self) -> Path:
        """First KB becomes the job's ExitMessage on SageMaker."""
        return self.root / "output" / "message"

    @property
    def stop_file(self) -> Path:
        """Written before a warm worker is signalled to stop this job: signals carry no job."""
        return self.root / "stop-requested"

    @property
    def progress_file(self) -> Path:
        """``<cells done> <cells>``, rewritten after each cell, when the launcher draws the bar."""
        return self.root / "progress"

    def resolve(self, channel_path: str) -> Path:
        """``input/<name>`` or ``output/<name>`` to a directory of this layout."""
        return self.root / "processing" / channel_path
