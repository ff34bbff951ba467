"""batcat_nb: run Jupyter notebooks as tracked batch jobs, locally, in Docker or on SageMaker.

    import batcat_nb
    result = batcat_nb.run("train.ipynb", parameters={"alpha": 0.1})
    handle = batcat_nb.submit("train.ipynb", backend="local")   # returns at once

Heavy modules load on first use, so ``import batcat_nb`` stays quick inside notebooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .record import record

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .backends.base import JobHandle
    from .notebook import Parameter
    from .result import RunResult

__all__ = ["__version__", "inspect", "record", "run", "submit"]


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


def inspect(notebook: str) -> list[Parameter]:
    """The parameters ``notebook`` declares, with types, defaults and help."""
    from .notebook import load_notebook

    return load_notebook(notebook).parameters() or []


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext batcat_nb``."""
    from .magics import load_ipython_extension as load

    load(ipython)
