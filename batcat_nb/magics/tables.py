"""What ``%batcat_params`` and ``%batcat_runs`` show: a notebook's parameters, the runs of
experiments as a DataFrame."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from ..notebook import Parameter


class ParameterTable:
    """The parameters a notebook declares, for ``%batcat_params``."""

    def __init__(self, path: Path, parameters: list[Parameter] | None) -> None:
        self.path = path
        self.parameters = parameters

    def _rows(self) -> list[tuple[str, str, str, str]]:
        return [(p.name, p.type_name or "any", p.default, p.help) for p in self.parameters or []]

    def __str__(self) -> str:
        if self.parameters is None:
            return f"{self.path}: no cell tagged 'parameters' (values are injected at the top)"
        width = max((len(name) for name, *_ in self._rows()), default=0)
        lines = [
            f"  {name:<{width}}  {kind:<6} (default {default})  {help_}".rstrip()
            for name, kind, default, help_ in self._rows()
        ]
        return "\n".join([f"Parameters of {self.path}", *lines])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        path = html.escape(str(self.path))
        caption = f"<caption style='text-align:left'>Parameters of <code>{path}</code></caption>"
        if self.parameters is None:
            return f"<div class='batcat-params'>{html.escape(str(self))}</div>"
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("name", "type", "default", "help"))
        cells = [
            "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in row) for row in self._rows()
        ]
        body = "".join(f"<tr>{row}</tr>" for row in cells)
        return f"<table class='batcat-params'>{caption}<tr>{head}</tr>{body}</table>"


def runs_frame(client: Any, experiments: dict[str, str], last: int) -> Any:
    """The last runs of ``experiments`` (id: name) as a DataFrame, newest first, one row a run."""
    try:
        import pandas as pd
    except ImportError:
        raise UsageError("%batcat_runs shows its table as a pandas DataFrame: pip install pandas") from None

    order = ["attributes.start_time DESC"]
    runs = client.search_runs(list(experiments), max_results=last, order_by=order) if experiments else []
    rows = []
    for run in runs:
        info, data = run.info, run.data
        start = datetime.fromtimestamp(info.start_time / 1000).replace(microsecond=0)
        rows.append(
            {
                "run": info.run_name or info.run_id,
                "experiment": experiments.get(info.experiment_id, info.experiment_id),
                "status": info.status,
                "start": start,
                "duration_s": round((info.end_time - info.start_time) / 1000, 1) if info.end_time else None,
                **{f"params.{k}": v for k, v in sorted(data.params.items())},
                **{f"metrics.{k}": v for k, v in sorted(data.metrics.items())},
                "run_id": info.run_id,
            }
        )
    base = ["run", "experiment", "status", "start", "duration_s"]
    frame = pd.DataFrame(rows, columns=None if rows else [*base, "run_id"])
    params = sorted(c for c in frame.columns if c.startswith("params."))
    metrics = sorted(c for c in frame.columns if c.startswith("metrics."))
    for column in params:  # parameters are strings in MLflow: numbers compare better as numbers
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if numbers.notna().sum() == frame[column].notna().sum():
            frame[column] = numbers
    if len(experiments) <= 1:
        base.remove("experiment")
    return frame[[*base, *params, *metrics, "run_id"]]


def best_first(frame: Any, metric: str, ascending: bool) -> Any:
    """``frame`` sorted by ``metric`` (``name`` or ``metrics.name``), runs without it last."""
    column = metric if metric.startswith("metrics.") else f"metrics.{metric}"
    if column not in frame.columns:
        known = [c.removeprefix("metrics.") for c in frame.columns if c.startswith("metrics.")]
        raise UsageError(
            f"no metric '{metric}' in these runs{did_you_mean(metric, known)}; "
            f"metrics: {', '.join(known) or 'none'}"
        )
    return frame.sort_values(column, ascending=ascending, na_position="last", kind="stable")
