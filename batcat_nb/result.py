"""What a finished run looks like to a user: ``RunResult``."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from .errors import RunFailed
from .manifest import FINISHED, CellError
from .redact import mask_uri
from .ui import ui_command

INTERRUPTED = "interrupted by the user (Ctrl-C)"
_SIGNALLED = "stopped: the launcher got "


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP to the launcher (a closed terminal, ``kill``): stop as Ctrl-C does."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.reason = f"{_SIGNALLED}{signal_name}"


def interruption(exc: BaseException) -> str:
    """The reason a run ends KILLED when the launcher is interrupted by ``exc``."""
    return getattr(exc, "reason", INTERRUPTED)


class ShownOnce:
    """A result the magics show as soon as its run ends, whether or not the call is assigned
    (``r = %batcat_run ...``); IPython's own display of it in that same cell then shows nothing."""

    _shown_in_cell: int | None = None

    def show(self, shell: Any) -> None:
        """Display it now, under the running cell."""
        self._publish()
        self._shown_in_cell = getattr(shell, "execution_count", None)

    def _ipython_display_(self) -> None:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None or self._shown_in_cell != shell.execution_count:
            self._publish()

    def _publish(self) -> None:
        from IPython.display import publish_display_data

        publish_display_data({"text/plain": str(self), "text/html": self._repr_html_()})

    def _repr_html_(self) -> str:
        raise NotImplementedError


@dataclass
class RunResult(ShownOnce):
    """The outcome of one run: status, where its outputs are, and its MLflow run."""

    job_name: str
    status: str
    run_id: str | None
    experiment_id: str | None
    tracking_uri: str = field(repr=False)  # may carry credentials: shown masked
    backend: str
    duration: float = 0.0
    output_notebook: str | None = None
    html: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    error: CellError | None = None
    run_url: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == FINISHED

    @property
    def interrupted(self) -> bool:
        return self.reason == INTERRUPTED or self.reason.startswith(_SIGNALLED)

    def raise_for_status(self) -> RunResult:
        """Raise RunFailed unless the run finished."""
        if not self.ok:
            raise RunFailed(f"{self.job_name} {self.status}: {self.reason}", self)
        return self

    def summary_lines(self) -> list[tuple[str, str]]:
        """(label, value) rows shared by the terminal and HTML summaries."""
        rows = [("status", self.status), ("duration", f"{self.duration:.1f}s")]
        if self.reason and not self.ok:
            rows.append(("reason", self.reason))
        if self.parameters:
            rows.append(("parameters", ", ".join(f"{k}={v}" for k, v in self.parameters.items())))
        if self.metrics:
            rows.append(("metrics", ", ".join(f"{k}={v:.4g}" for k, v in self.metrics.items())))
        rows.append(("notebook", self.output_notebook or "(none written)"))
        rows += [(f"output {name}", where) for name, where in self.outputs.items()]
        if self.run_id:
            rows.append(("mlflow run", f"{self.run_id} (experiment {self.experiment_id})"))
            hint = f"{ui_command(self.tracking_uri)}  (then open the URL it prints)"
            rows.append(("open", mask_uri(self.run_url or hint)))
        return rows

    def __str__(self) -> str:
        width = max(len(label) for label, _ in self.summary_lines())
        body = "\n".join(f"  {label:<{width}}  {value}" for label, value in self.summary_lines())
        return f"{self.job_name}\n{body}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
            f"<td style='text-align:left'>{_html_value(label, value)}</td></tr>"
            for label, value in self.summary_lines()
        )
        colour = "#2e7d32" if self.ok else "#c62828"
        return (
            f"<div class='batcat-result'><b style='color:{colour}'>{html.escape(self.status)}</b> "
            f"<code>{html.escape(self.job_name)}</code><table>{rows}</table></div>"
        )

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "tracking_uri": mask_uri(self.tracking_uri)}


def _html_value(label: str, value: str) -> str:
    if label == "open" and value.startswith("http"):
        return f"<a href='{html.escape(value)}' target='_blank'>{html.escape(value)}</a>"
    return html.escape(value)
