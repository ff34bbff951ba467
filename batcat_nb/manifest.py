"""The run manifest: what the worker leaves beside the executed notebook, wherever it ran.

The launcher completes the MLflow run from it, so a job that could not reach the tracking
store loses nothing.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError

log = logging.getLogger("batcat_nb")

MANIFEST_NAME = "batcat-manifest.json"
RECORDS_NAME = "batcat-records.jsonl"

FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"
# MAJOR.MINOR: a reader accepts any minor (unknown fields are ignored) and refuses a newer major.
MANIFEST_VERSION = "1.0"


@dataclass
class CellError:
    """The cell that failed, as papermill reports it."""

    cell_index: int | None
    ename: str
    evalue: str

    def __str__(self) -> str:
        where = f"cell {self.cell_index}: " if self.cell_index is not None else ""
        return f"{where}{self.ename}: {self.evalue}"


@dataclass
class Manifest:
    """The outcome of one job."""

    job_name: str
    status: str = RUNNING
    notebook: str = ""  # file name of the executed notebook in the output directory
    html: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # name: [(value, step)]
    artifacts: list[str] = field(default_factory=list)  # paths relative to the output directory
    error: CellError | None = None
    reason: str = ""
    kernel: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0
    version: str = MANIFEST_VERSION

    @property
    def duration(self) -> float:
        return max(0.0, self.ended_at - self.started_at)

    def last_metrics(self) -> dict[str, float]:
        return {name: points[-1][0] for name, points in self.metrics.items() if points}

    def write(self, directory: Path) -> Path:
        """Write atomically (temporary file, fsync, rename): a reader sees all of it or nothing."""
        path = directory / MANIFEST_NAME
        text = json.dumps(self.to_dict(), indent=2, default=str)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.", dir=directory)
        try:
            with os.fdopen(descriptor, "w") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o644)  # as a plain write would leave it (mkstemp makes it 0600)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        return cls.from_dict(json.loads((directory / MANIFEST_NAME).read_text()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Read a manifest of any 1.x version: fields this version does not know are ignored."""
        data = dict(data)
        version = str(data.get("version", "1.0"))
        if _major(version) > _major(MANIFEST_VERSION):
            raise ManifestVersionError(
                f"the job's manifest has version {version}, newer than this batcat_nb reads "
                f"({MANIFEST_VERSION}); upgrade batcat_nb (pip install -U batcat_nb)"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            log.debug("manifest fields of a newer version ignored: %s", ", ".join(unknown))
        data = {k: v for k, v in data.items() if k in known}
        error = data.pop("error", None)
        metrics = {k: [tuple(p) for p in v] for k, v in data.pop("metrics", {}).items()}
        if error:
            error = CellError(*(error.get(f.name) for f in fields(CellError)))
        return cls(**data, metrics=metrics, error=error)


class ManifestVersionError(UsageError):
    """The manifest was written by a newer major version of batcat_nb."""


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0
