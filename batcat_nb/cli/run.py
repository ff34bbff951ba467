"""``batcat run``, ``submit``, ``inspect`` and ``ui``: one notebook, as a run or a sweep."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import UsageError
from ..redact import mask_uri
from . import signals
from .exit_codes import EXIT_FAILED
from .options import SectionedCommand, option, request_from_options, run_options, sweep_from_options


@click.command(cls=SectionedCommand)
@run_options
@option("Run", "--no-wait", is_flag=True, help="Return once the job is submitted (as `batcat submit`).")
def run(no_wait: bool, **options: Any) -> None:
    """Execute NOTEBOOK in a fresh kernel and record it as an MLflow run (or a sweep of runs)."""
    from .. import api

    if no_wait:
        if options["grid"] or options["sweep_file"]:
            raise UsageError("--no-wait starts one run; a sweep (--grid, --sweep) waits for its runs")
        submit_and_report(request_from_options(options))
        return
    sweep = sweep_from_options(options)
    if sweep is not None:
        from ..sweeps import run_sweep

        outcome: Any = run_sweep(sweep)
    else:
        outcome = api.run(request_from_options(options))
    click.echo(str(outcome))
    if not outcome.ok:
        sys.exit(signals.exit_code() if outcome.interrupted else EXIT_FAILED)


@click.command(cls=SectionedCommand)
@run_options
def submit(**options: Any) -> None:
    """Submit NOTEBOOK (default backend: sagemaker) and return once the job exists."""
    request = request_from_options(options)
    request.backend = options["backend"] or "sagemaker"
    submit_and_report(request)


def submit_and_report(request: Any) -> Any:
    """Submit without waiting; print the job's name and how to follow it (``run --no-wait`` too)."""
    from .. import api

    handle = api.submit(request, detached=True)
    click.echo(handle.job_name)
    click.echo(
        f"  follow   batcat logs {handle.job_name} --follow\n"
        f"  result   batcat download {handle.job_name}  (fetches the notebook, completes the MLflow run)",
        err=True,
    )
    return handle


@click.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
def inspect(notebook: str) -> None:
    """List the parameters NOTEBOOK declares: types, defaults and help."""
    from ..notebook import load_notebook

    nb = load_notebook(notebook)
    readable = nb.readable_parameters()
    click.echo(f"Parameters of {nb.path}")
    if readable is None:
        click.echo("  (no cell tagged 'parameters': values are injected at the top)")
        return
    declared, skipped = readable
    width = max((len(p.name) for p in declared), default=0)
    for p in declared:
        kind = p.type_name or "any"
        line = f"  {p.name:<{width}}  {kind:<6} (default {p.default})"
        click.echo(f"{line}  {p.help}".rstrip())
    for number, text in skipped:  # as papermill --help-notebook: read what can be read
        click.echo(f"batcat: skipped parameters line {number} (not Python): {text.strip()}", err=True)


@click.command()
@click.option("--port", default=5000, show_default=True)
@click.option("--tracking-uri", default=None, help="Store to show (default: the project's).")
def ui(port: int, tracking_uri: str | None) -> None:
    """Serve the MLflow UI for the project's tracking store on 127.0.0.1."""
    import importlib.util
    import os

    from ..tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    if importlib.util.find_spec("mlflow.server") is None or importlib.util.find_spec("flask") is None:
        raise UsageError("the MLflow UI needs the full mlflow package: pip install 'batcat_nb[ui]'")
    from ..ui import record_ui

    url = f"http://127.0.0.1:{port}"
    click.echo(f"MLflow UI for {mask_uri(uri)} at {url}", err=True)
    record_ui(uri, url)  # summaries printed while it runs link to their run
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    command = ["-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    os.execvp(sys.executable, [sys.executable, *command, "--port", str(port), "--workers", "1"])
