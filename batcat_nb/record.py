"""``batcat_nb.record``: keep a metric, a dict of metrics or a table from inside a notebook.

Under batcat (``batcat run``, the magics, papermill's ``--engine batcat``) the value lands on
the job's MLflow run; under plain papermill or Jupyter it is only displayed.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RECORDS_ENV = "BATCAT_RECORDS_FILE"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.\-/ ]")


def record(name: str, value: Any, step: int = 0) -> Any:
    """Record ``value`` under ``name`` and display it.

    A number becomes a metric; the numbers in a dict become ``name.key`` metrics; a table (a
    pandas DataFrame or a list of dicts) becomes the artifact ``tables/<name>.csv``.
    """
    _display(name, value)
    path = os.environ.get(RECORDS_ENV)
    if path:
        records = Path(path)
        with records.open("a") as out:
            for entry in _entries(name, value, step, records.parent):
                out.write(json.dumps(entry) + "\n")
    return value


def _entries(name: str, value: Any, step: int, directory: Path) -> list[dict[str, Any]]:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return [{"kind": "metric", "name": name, "value": float(value), "step": step}]
    if isinstance(value, Mapping):
        return [
            entry
            for key, inner in value.items()
            if isinstance(inner, (numbers.Real, Mapping)) and not isinstance(inner, bool)
            for entry in _entries(f"{name}.{key}", inner, step, directory)
        ]
    table = _as_table(value)
    if table is not None:
        relative = f"tables/{_SAFE_NAME.sub('_', name)}.csv"
        (directory / "tables").mkdir(exist_ok=True)
        table.to_csv(directory / relative, index=False)
        return [{"kind": "artifact", "name": name, "path": relative}]
    raise TypeError(
        f"record({name!r}, ...) takes a number, a dict of numbers or a table, not {type(value).__name__}"
    )


def _as_table(value: Any) -> Any:
    if hasattr(value, "to_csv"):
        return value
    if isinstance(value, list) and value and all(isinstance(row, Mapping) for row in value):
        import pandas as pd

        return pd.DataFrame(value)
    return None


def _display(name: str, value: Any) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is None:
        return
    if isinstance(value, (numbers.Real, Mapping)):
        display({"text/plain": f"{name}: {value!r}"}, raw=True)
    else:
        display(value)
