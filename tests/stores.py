"""A fresh SQLite MLflow store in a fraction of a second, for tests run many times (mutmut).

Creating a store runs MLflow's schema migrations (over ten seconds on a busy machine); a copy
of an empty, migrated store is the same store. The empty one is built once per MLflow version
and kept in the temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def fresh_store(directory: Path) -> str:
    """The URI of a new, empty SQLite store in ``directory``."""
    import mlflow

    template = Path(tempfile.gettempdir()) / f"batcat-tests-empty-mlflow-{mlflow.__version__}.db"
    if not template.exists():
        building = Path(tempfile.mkdtemp()) / "mlflow.db"
        mlflow.tracking.MlflowClient(f"sqlite:///{building}").search_experiments()  # migrates
        os.replace(building, template)  # atomic: a concurrent session sees all of it or none
    store = directory / "mlflow.db"
    shutil.copyfile(template, store)
    return f"sqlite:///{store}"
