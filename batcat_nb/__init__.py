"""batcat_nb: run Jupyter notebooks as tracked batch jobs, locally, in Docker or on SageMaker.

    import batcat_nb
    result = batcat_nb.run("train.ipynb", parameters={"alpha": 0.1})
    handle = batcat_nb.submit("train.ipynb", backend="local")   # returns at once
    outcome = batcat_nb.workflow.run("workflows/daily_sales.yaml")   # a pipeline of notebooks

Heavy modules load on first use, so ``import batcat_nb`` stays quick inside notebooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import workflow  # light: its modules load on first use
from ._version import __version__
from .record import record

if TYPE_CHECKING:
    from .backends.base import JobHandle
    from .notebook import Parameter
    from .reruns import RerunResult
    from .result import RunResult
    from .sweeps import SweepResult

__all__ = ["__version__", "inspect", "record", "rerun", "run", "submit", "sweep", "workflow"]


def run(notebook: str, parameters: dict[str, Any] | None = None, **options: Any) -> RunResult:
    """Run ``notebook`` to the end and return its RunResult (status, run id, outputs, metrics).

    ``options`` are RunRequest's fields: backend, experiment, inputs, outputs, output_dir,
    kernel, timeout, execution_timeout, allow_unknown_parameters, log_output, progress, ...
    """
    from . import api
    from .spec import RunRequest

    return api.run(RunRequest(notebook=str(notebook), parameters=dict(parameters or {}), **options))


def submit(notebook: str, parameters: dict[str, Any] | None = None, **options: Any) -> JobHandle:
    """Start ``notebook`` and return its handle at once (``status()``, ``wait()``, ``cancel()``)."""
    from . import api
    from .spec import RunRequest

    return api.submit(RunRequest(notebook=str(notebook), parameters=dict(parameters or {}), **options))


def sweep(
    notebook: str,
    grid: dict[str, list[Any]] | None = None,
    runs: list[dict[str, Any]] | None = None,
    *,
    parameters: dict[str, Any] | None = None,
    objective: str | None = None,
    maximize: bool = False,
    max_parallel: int | None = None,
    fail_fast: bool = False,
    rerun: bool = False,
    **options: Any,
) -> SweepResult:
    """Run ``notebook`` for every combination of ``grid`` and every parameter set in ``runs``.

    One parent MLflow run groups a child run per combination; ``objective`` ranks them.
    ``options`` are RunRequest's fields, as for ``run``.
    """
    from .spec import RunRequest
    from .sweeps import SweepRequest, grid_combinations, run_sweep

    combinations = (grid_combinations(grid) if grid else []) + [dict(r) for r in runs or []]
    base = RunRequest(notebook=str(notebook), parameters=dict(parameters or {}), **options)
    request = SweepRequest(base, combinations, objective, maximize, max_parallel, fail_fast, rerun)
    return run_sweep(request)


def rerun(run_id: str, parameters: dict[str, Any] | None = None, **options: Any) -> RerunResult:
    """Run the recorded run ``run_id`` again as it was (``parameters`` override its given ones).

    ``options``: backend, tracking_uri, backend_options (``{"image": ...}`` to run in another
    image), from_environment (build the image from the run's ``environment.txt``), and
    RunRequest's output_dir, progress, retries, ... The result compares its metrics with the
    original's and names inputs that changed.
    """
    from .reruns import rerun as rerun_run

    return rerun_run(run_id, parameters, **options)


def inspect(notebook: str) -> list[Parameter]:
    """The parameters ``notebook`` declares, with types, defaults and help."""
    from .notebook import load_notebook

    return load_notebook(notebook).parameters() or []


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext batcat_nb``."""
    from .magics import load_ipython_extension as load

    load(ipython)
