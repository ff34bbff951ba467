"""The run manifest: what the worker leaves beside the executed notebook, wherever it ran.

The launcher completes the MLflow run from it, so a job that could not reach the tracking
store loses nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "batcat-manifest.json"
RECORDS_NAME = "batcat-records.jsonl"

FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"


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

    @property
    def duration(self) -> float:
        return max(0.0, self.ended_at - self.started_at)

    def last_metrics(self) -> dict[str, float]:
        return {name: points[-1][0] for name, points in self.metrics.items() if points}

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        return path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        return cls.from_dict(json.loads((directory / MANIFEST_NAME).read_text()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        error = data.pop("error", None)
        metrics = {k: [tuple(p) for p in v] for k, v in data.pop("metrics", {}).items()}
        return cls(**data, metrics=metrics, error=CellError(**error) if error else None)
