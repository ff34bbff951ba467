"""A throwaway project for a benchmark: its own MLflow store and agents, stopped at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "hello.ipynb"
BIN = Path(sys.executable).parent


@contextmanager
def scratch_project() -> Iterator[Path]:
    """A temporary working directory whose runs go to a fresh SQLite store (schema built)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ.update(
            MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
            MLFLOW_DISABLE_TELEMETRY="true",
            DO_NOT_TRACK="true",
            BATCAT_AGENT_DIR=str(work / "agents"),
        )
        subprocess.run(  # a new store builds its schema once: not what is measured
            [str(BIN / "python"), "-c", "import mlflow; mlflow.MlflowClient().search_experiments()"],
            check=True,
            capture_output=True,
        )
        try:
            yield work
        finally:
            subprocess.run([str(BIN / "batcat"), "agent", "stop"], check=False, capture_output=True)


def parameters_notebook(path: Path, parameters: str, body: str) -> Path:
    """A python3 notebook at ``path``: a ``parameters`` cell, then ``body``."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    cell = new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells += [cell, new_code_cell(body)]
    nbformat.write(nb, str(path))
    return path
