"""Tracking for papermill's own entry points: ``papermill ... --engine batcat``.

Airflow's papermill operator and other schedulers call papermill directly; with the batcat
engine their runs become MLflow runs exactly like ``batcat run``'s.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat

from .manifest import FAILED, FINISHED, KILLED, RECORDS_NAME, CellError, Manifest
from .notebook import load_notebook
from .parameters import recorded, with_defaults
from .record import RECORDS_ENV
from .spec import job_name
from .tracking import Tracker, default_tracking_uri, run_env, run_tags
from .worker import IN_JOB_ENV, collect_records, job_preamble, render_html


@contextmanager
def tracked_papermill_run(nb_man: Any, kernel_name: str, kwargs: dict[str, Any]) -> Iterator[str]:
    """Create the run, yield the kernel preamble that points at it, complete it afterwards."""
    source = Path(str(kwargs.get("input_path") or "notebook.ipynb"))
    notebook = load_notebook(source) if source.exists() else None
    given = dict(nb_man.nb.metadata.get("papermill", {}).get("parameters", {}))
    params = recorded(with_defaults(notebook, given) if notebook else given)
    name = job_name(source.stem)
    tracker = Tracker(default_tracking_uri())
    run_id, experiment_id = tracker.start_run(
        experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME") or source.stem,
        run_name=name,
        params=params,
        tags=run_tags(
            notebook_path=source.resolve(),
            notebook_sha256=notebook.sha256 if notebook else "",
            backend="papermill",
            kernel=kernel_name,
            job_name=name,
        ),
    )
    workdir = Path(tempfile.mkdtemp(prefix="batcat-papermill-"))
    manifest = Manifest(name, notebook=f"{source.stem}.ipynb", parameters=params, kernel=kernel_name)
    manifest.started_at = time.time()
    env = {
        **run_env(tracker.uri, run_id, experiment_id),
        RECORDS_ENV: str(workdir / RECORDS_NAME),
        IN_JOB_ENV: name,  # a %batcat_run in the notebook never submits from a batch run
    }
    try:
        yield job_preamble(None, env)
        manifest.error = first_error(nb_man.nb)
        manifest.status = FAILED if manifest.error else FINISHED
    except BaseException as exc:
        manifest.status = KILLED if isinstance(exc, KeyboardInterrupt) else FAILED
        manifest.reason = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        manifest.ended_at = time.time()
        manifest.reason = manifest.reason or (str(manifest.error) if manifest.error else "")
        nbformat.write(nb_man.nb, str(workdir / manifest.notebook))
        collect_records(manifest, workdir)
        manifest.html = render_html(workdir / manifest.notebook)
        manifest.write(workdir)
        tracker.complete_run(run_id, manifest, workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def first_error(nb: Any) -> CellError | None:
    """The first cell with an error output, as papermill would report it."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return CellError(index, output.get("ename", ""), output.get("evalue", ""))
    return None
