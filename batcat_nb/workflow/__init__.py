"""Workflows: notebooks chained into a pipeline kept in Git, run here or deployed to Step Functions.

    from batcat_nb import workflow
    workflow.check("workflows/daily_sales.yaml")            # the Workflow, or WorkflowError
    result = workflow.run("workflows/daily_sales.yaml", parameters={"min_units": 2})

``model`` is the in-memory form of a workflow file; ``loader`` reads and checks the YAML file;
``local`` runs it from here over any backend. Modules load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .local import WorkflowResult
    from .model import Workflow

__all__ = ["check", "run"]


def check(path: str | Path) -> Workflow:
    """Load and check the whole workflow file; raise WorkflowError naming the first problem."""
    from .loader import load_workflow

    return load_workflow(path)


def run(
    path: str | Path,
    parameters: dict[str, Any] | None = None,
    backend: str | None = None,
    max_parallel: int | None = None,
    resume: bool = False,
    **options: Any,
) -> WorkflowResult:
    """Run the workflow from here: steps in dependency order, independent ones at once.

    ``parameters`` override the file's workflow parameters; ``resume`` re-runs only the steps
    the last execution did not finish. ``options`` are RunRequest's fields (experiment,
    tracking_uri, output_dir, progress, ...), applied to every step.
    """
    from .local import WorkflowRequest, run_workflow

    request = WorkflowRequest(
        workflow=check(path),
        parameters=dict(parameters or {}),
        backend=backend,
        max_parallel=max_parallel,
        resume=resume,
        options=options,
    )
    return run_workflow(request)
