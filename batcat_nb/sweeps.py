"""Parameter sweeps: every combination its own job, grouped under one parent MLflow run.

    batcat run nb.ipynb --grid alpha=0.01,0.1,1 --grid l1_ratio=0.2,0.8 --objective test.rmse

Running the same sweep again resumes it: combinations that already finished in it are skipped.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import api, retry
from .backends import registry
from .backends.base import JobHandle
from .errors import BatcatError, UsageError
from .manifest import FAILED, FINISHED, KILLED
from .parameters import resolve_value
from .progress import progress_bar
from .result import RunResult, ShownOnce, interruption
from .spec import RunRequest, job_name
from .tracking import TAG_REASON

log = logging.getLogger("batcat_nb")

TAG_SWEEP_ID = "batcat.sweep.id"
TAG_SWEEP_KEY = "batcat.sweep.key"
TAG_SWEEP_DEFINITION = "batcat.sweep.definition"
TAG_SWEEP_BEST_RUN = "batcat.sweep.best_run_id"
TAG_PARENT = "mlflow.parentRunId"


@dataclass
class SweepRequest:
    """A base run and the parameter sets to run it with."""

    base: RunRequest
    combinations: list[dict[str, Any]]
    objective: str | None = None
    maximize: bool = False
    max_parallel: int | None = None
    fail_fast: bool = False
    rerun: bool = False


@dataclass
class SweepResult(ShownOnce):
    """Every combination's result, best first when there is an objective."""

    name: str
    parent_run_id: str
    results: list[RunResult]
    skipped: int = 0
    objective: str | None = None
    best: RunResult | None = None
    duration: float = 0.0
    failures: list[RunResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def interrupted(self) -> bool:
        return any(r.interrupted for r in self.failures)

    def rows(self) -> list[dict[str, str]]:
        keys = sorted({k for r in self.results for k in r.parameters if _varies(self.results, k)})
        metrics = sorted({m for r in self.results for m in r.metrics})
        return [
            {
                "status": r.status,
                **{k: r.parameters.get(k, "") for k in keys},
                **{m: f"{r.metrics[m]:.4g}" if m in r.metrics else "" for m in metrics},
                "run": r.run_id or "",
                "reason": r.reason if not r.ok else "",
            }
            for r in self.results
        ]

    def __str__(self) -> str:
        rows = self.rows()
        lines = [f"sweep {self.name}: {len(self.results)} run, {len(self.failures)} failed"
                 + (f", {self.skipped} already finished" if self.skipped else "")
                 + f", {self.duration:.1f}s (parent run {self.parent_run_id})"]  # fmt: skip
        if rows:
            columns = [c for c in rows[0] if any(row[c] for row in rows)]
            widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
            lines.append("  ".join(c.ljust(widths[c]) for c in columns))
            lines += ["  ".join(row[c].ljust(widths[c]) for c in columns) for row in rows]
        if self.best is not None and self.objective:
            value = self.best.metrics.get(self.objective)
            lines.append(f"best {self.objective}={value:.4g}: run {self.best.run_id}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = self.rows()
        if not rows:
            return f"<p>sweep {html.escape(self.name)}: nothing to run</p>"
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>" for row in rows
        )
        return f"<p>{html.escape(str(self).splitlines()[0])}</p><table><tr>{head}</tr>{body}</table>"


def grid_combinations(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order given."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def parse_grid(options: list[str]) -> dict[str, list[Any]]:
    """``--grid name=v1,v2`` options; values typed as ``-p`` types them."""
    grid: dict[str, list[Any]] = {}
    for option in options:
        name, sep, values = option.partition("=")
        if not sep or not name or not values:
            raise UsageError(f"--grid takes NAME=V1,V2,..., got {option!r}")
        if name in grid:
            raise UsageError(f"--grid {name} is given twice; list all its values once")
        grid[name] = [resolve_value(v.strip()) for v in values.split(",")]
    return grid


def load_sweep_file(path: str | Path) -> list[dict[str, Any]]:
    """A YAML file with ``grid: {name: [values]}`` and/or ``runs: [{name: value}, ...]``."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"sweep file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"sweep file {file} is not valid YAML: {exc}") from None
    if isinstance(data, list):
        data = {"runs": data}
    if not isinstance(data, dict) or not set(data) <= {"grid", "runs"} or not data:
        raise UsageError(f"sweep file {file} needs 'grid: {{name: [values]}}' and/or 'runs: [{{...}}]'")
    grid = data.get("grid") or {}
    runs = data.get("runs") or []
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise UsageError(f"'grid' in {file} must map each name to a list of values")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise UsageError(f"'runs' in {file} must be a list of name: value mappings")
    return (grid_combinations(grid) if grid else []) + [dict(r) for r in runs]


def run_sweep(request: SweepRequest) -> SweepResult:
    """Run every combination not yet finished in this sweep; never stop at a failure unless asked."""
    return _Sweep(request).run()


class _Sweep:
    def __init__(self, request: SweepRequest) -> None:
        if not request.combinations:
            raise UsageError("the sweep has no combinations: give --grid NAME=V1,V2 or --sweep FILE")
        self.request = request
        self.base = request.base
        names = job_names(Path(self.base.notebook).stem, len(request.combinations))
        self.specs = [
            api.resolve_spec(self._child_request(c, name))
            for c, name in zip(request.combinations, names, strict=True)
        ]
        first = self.specs[0]
        self.backend = registry.get(first.backend)
        self.tracker = api.tracker_for(self.backend, first.tracking_uri)
        self.sweep_id = _sweep_id(first.notebook, self.base.parameters, request.combinations)
        self.name = f"{Path(first.notebook).stem}-sweep-{self.sweep_id}"
        for spec in self.specs[:1]:
            api.validate(self.backend, spec)
        self._stop = threading.Event()
        self._stop_reason = ""

    def _child_request(self, combination: dict[str, Any], name: str) -> RunRequest:
        return replace(
            self.base,
            parameters={**self.base.parameters, **combination},
            progress=False,
            tags={**self.base.tags},
            job_name=name,
        )

    def run(self) -> SweepResult:
        started = time.time()
        parallel = min(self.request.max_parallel or os.cpu_count() or 1, len(self.specs))
        results: list[RunResult] = []
        interrupted = False
        with self._concurrent(parallel):  # workers warm up while MLflow loads
            experiment_id = self.tracker.experiment_id(self.specs[0].experiment)
            parent = self._parent_run(experiment_id)
            done = set(self.tracker.finished_children(experiment_id, parent, TAG_SWEEP_KEY))
            todo = [s for s in self.specs if self.request.rerun or _key(s.recorded_parameters) not in done]
            with (
                progress_bar(len(todo), self.name, "run", self.base.progress) as bar,
                ThreadPoolExecutor(max_workers=parallel) as executor,
            ):
                futures = [executor.submit(self._run_one, spec, parent) for spec in todo]
                try:
                    for future in as_completed(futures):
                        result = future.result()
                        results.append(result)
                        bar.update(1)
                        bar.set_postfix(failed=sum(not r.ok for r in results), refresh=False)
                        if not result.ok and self.request.fail_fast:
                            self._stop_all("stopped: an earlier combination failed (--fail-fast)")
                except KeyboardInterrupt as exc:
                    interrupted = True
                    self._stop_all(interruption(exc))
                    results = [f.result() for f in futures]
                except BatcatError as exc:  # the store stayed away: stop, and say so on the parent
                    self._stop_all(f"stopped: {exc}")
                    wait(futures)
                    self._fail_parent(parent, str(exc))
                    raise
        results = [future.result() for future in futures]  # in the sweep's order
        skipped = len(self.specs) - len(todo)
        return self._finish(parent, results, skipped, time.time() - started, interrupted)

    def _stop_all(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    def _concurrent(self, parallel: int) -> Any:
        """Let the backend prepare for ``parallel`` jobs at once (warm local workers)."""
        concurrent = getattr(self.backend, "concurrent", None)
        if concurrent is None:
            return nullcontext()
        return concurrent(parallel, Path(self.specs[0].output_dir).parent / f"{self.name}.log")

    def _run_one(self, spec: Any, parent: str) -> RunResult:
        if self._stop.is_set():
            return _not_run(spec, f"not run: {self._stop_reason}")
        tags = {TAG_PARENT: parent, TAG_SWEEP_KEY: _key(spec.recorded_parameters)}
        handle = api.start(self.backend, self.tracker, spec, tags)
        return retry.wait_with_retries(
            handle,
            lambda h: follow(h, self._stop, lambda: self._stop_reason),
            lambda h, name: api.resubmit(h, name, self.backend),
            lambda seconds: self._stop_reason if self._stop.wait(seconds) else None,
        )

    def _parent_run(self, experiment_id: str) -> str:
        found = self.tracker.find_run(experiment_id, TAG_SWEEP_ID, self.sweep_id)
        if found:
            self.tracker.reopen_run(found)
            return found
        definition = {"base": self.base.parameters, "combinations": self.request.combinations}
        run_id, _ = self.tracker.start_run(
            experiment=self.specs[0].experiment,
            run_name=self.name,
            params={},
            tags={TAG_SWEEP_ID: self.sweep_id, TAG_SWEEP_DEFINITION: json.dumps(definition, default=str)},
        )
        return run_id

    def _fail_parent(self, parent: str, reason: str) -> None:
        try:
            self.tracker.end_run(parent, FAILED, {TAG_REASON: reason}, {})
        except Exception as exc:  # still away: the parent stays RUNNING, as before
            log.warning("the sweep's parent run %s stays RUNNING: %s", parent, exc)

    def _finish(
        self, parent: str, results: list[RunResult], skipped: int, duration: float, interrupted: bool
    ) -> SweepResult:
        objective = self.request.objective
        scored = [r for r in results if r.ok and objective and objective in r.metrics]
        scored.sort(key=lambda r: r.metrics[objective or ""], reverse=self.request.maximize)
        others = [r for r in results if r not in scored]
        ordered = scored + others
        best = scored[0] if scored else None
        tags: dict[str, str] = {}
        metrics: dict[str, float] = {}
        if best is not None and objective:
            tags = {TAG_SWEEP_BEST_RUN: best.run_id or ""}
            tags.update({f"batcat.sweep.best.{name}": value for name, value in best.parameters.items()})
            metrics = {f"best.{objective}": best.metrics[objective]}
        failures = [r for r in results if not r.ok]
        status = KILLED if interrupted else FAILED if failures else FINISHED
        self.tracker.end_run(parent, status, tags, metrics)
        return SweepResult(self.name, parent, ordered, skipped, objective, best, duration, failures)


def follow(handle: JobHandle, stop: threading.Event, reason: Callable[[], str]) -> RunResult:
    """Wait for a job of a group (sweep, workflow); once ``stop`` is set, cancel it with ``reason()``."""
    watch(handle, stop, reason)
    return handle.wait()


def job_names(notebook_stem: str, count: int) -> list[str]:
    """One job name per combination, unique within the sweep by its index and across sweeps
    by the time and a random token: ``<notebook>-<YYYYmmdd-HHMMSS>-<token>-<index>``."""
    token, width, now = secrets.token_hex(2), len(str(count)), time.time()
    return [job_name(notebook_stem, now, f"{token}-{i:0{width}d}") for i in range(1, count + 1)]


def watch(handle: JobHandle, stop: threading.Event, reason: Callable[[], str]) -> str:
    """The status a job ended with, before its run is completed (``wait()`` does that); once
    ``stop`` is set, cancel it with ``reason()``."""
    while not stop.is_set():
        status = handle.status()
        if status != "RUNNING":
            return status
        time.sleep(0.05)
    handle.cancel(reason())
    return KILLED


def _not_run(spec: Any, reason: str) -> RunResult:
    return RunResult(
        job_name=spec.job_name,
        status=KILLED,
        run_id=None,
        experiment_id=None,
        tracking_uri=spec.tracking_uri,
        backend=spec.backend,
        parameters=spec.recorded_parameters,
        reason=reason,
    )


def _varies(results: list[RunResult], name: str) -> bool:
    return len({r.parameters.get(name) for r in results}) > 1


def _key(parameters: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(parameters), sort_keys=True).encode()).hexdigest()[:16]


def _sweep_id(notebook: str, base: Mapping[str, Any], combinations: list[dict[str, Any]]) -> str:
    text = json.dumps([notebook, base, combinations], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]
