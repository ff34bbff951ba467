"""``batcat``: the command line. Thin: parse, build a RunRequest, call the API, print."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import click

from .errors import BatcatError, UsageError

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _pairs(values: Iterable[str], flag: str) -> dict[str, str]:
    """``name=value`` options to a dict; a repeated name is a mistake."""
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise UsageError(f"{flag} takes NAME=VALUE, got {value!r}")
        if name in pairs:
            raise UsageError(f"{flag} {name} is given twice; each name once")
        pairs[name] = rest
    return pairs


def run_options(command: Any) -> Any:
    """The options of ``batcat run``; the magics parse their line with the same command."""
    options = [
        click.argument("notebook", type=click.Path(dir_okay=False)),
        click.option(
            "-p",
            "--parameters",
            "values",
            nargs=2,
            multiple=True,
            metavar="NAME VALUE",
            help="Parameter, typed as papermill does (int, float, True/False/None, str).",
        ),
        click.option(
            "-r",
            "--parameters-raw",
            "raw",
            nargs=2,
            multiple=True,
            metavar="NAME VALUE",
            help="Parameter passed as a string, untouched.",
        ),
        click.option(
            "-y",
            "--parameters-yaml",
            "yaml_texts",
            multiple=True,
            metavar="YAML",
            help="Parameters as a YAML mapping.",
        ),
        click.option(
            "-f",
            "--parameters-file",
            "files",
            multiple=True,
            metavar="FILE",
            help="Parameters from a YAML file.",
        ),
        click.option("--backend", "-b", default=None, help="local (default), docker, sagemaker."),
        click.option(
            "--experiment", "-e", default=None, help="MLflow experiment (default: the notebook's name)."
        ),
        click.option(
            "--input",
            "inputs",
            multiple=True,
            metavar="NAME=PATH|S3URI",
            help="Input channel; a parameter NAME_dir receives its directory.",
        ),
        click.option(
            "--output",
            "outputs",
            multiple=True,
            metavar="NAME=PATH|S3URI",
            help="Output channel; a parameter NAME_dir receives its directory.",
        ),
        click.option(
            "--output-dir",
            "-o",
            default=None,
            help="Where executed notebooks go (default: batcat-runs/<job>).",
        ),
        click.option("--kernel", "-k", default=None, help="Kernel (default: the notebook's)."),
        click.option(
            "--timeout",
            type=float,
            default=None,
            help="Stop the whole run after this many seconds (run KILLED).",
        ),
        click.option(
            "--execution-timeout",
            type=float,
            default=None,
            help="Stop when one cell runs longer than this many seconds.",
        ),
        click.option(
            "--allow-unknown-parameters",
            is_flag=True,
            help="Inject parameters the notebook does not declare (with a warning).",
        ),
        click.option("--log-output", is_flag=True, help="Stream the cells' output here."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        click.option(
            "--tracking-uri",
            default=None,
            help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db).",
        ),
        click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag for the run."),
        click.option(
            "--grid",
            "grid",
            multiple=True,
            metavar="NAME=V1,V2,...",
            help="Sweep: run every combination of these values (repeatable).",
        ),
        click.option(
            "--sweep",
            "sweep_file",
            default=None,
            metavar="FILE",
            help="Sweep: YAML with 'grid: {name: [values]}' and/or 'runs: [{...}]'.",
        ),
        click.option(
            "--objective",
            default=None,
            metavar="METRIC",
            help="Sweep: rank runs by this metric; the parent run records the best.",
        ),
        click.option("--maximize/--minimize", default=False, help="Sweep: direction of --objective."),
        click.option(
            "--max-parallel",
            type=click.IntRange(min=1),
            default=None,
            help="Sweep: runs at once (default: the number of cores).",
        ),
        click.option("--fail-fast", is_flag=True, help="Sweep: stop at the first failed run."),
        click.option(
            "--rerun", is_flag=True, help="Sweep: run every combination, even those that finished before."
        ),
    ]
    for option in reversed(options):
        command = option(command)
    from .build_cli import docker_run_options
    from .jobs_cli import backend_options

    return backend_options(docker_run_options(command))  # shared, Docker and SageMaker options


def request_from_options(options: dict[str, Any]) -> Any:
    """Click's parsed ``run`` options to a RunRequest."""
    from . import parameters
    from .jobs_cli import backend_options_from
    from .spec import RunRequest

    return RunRequest(
        notebook=options["notebook"],
        parameters=parameters.collect(
            files=options["files"],
            yaml_texts=options["yaml_texts"],
            values=options["values"],
            raw=options["raw"],
        ),
        backend=options["backend"],
        experiment=options["experiment"],
        inputs=_pairs(options["inputs"], "--input"),
        outputs=_pairs(options["outputs"], "--output"),
        output_dir=options["output_dir"],
        kernel=options["kernel"],
        timeout=options["timeout"],
        execution_timeout=options["execution_timeout"],
        allow_unknown_parameters=options["allow_unknown_parameters"],
        log_output=options["log_output"],
        progress=not options["no_progress"],
        tracking_uri=options["tracking_uri"],
        tags=_pairs(options["tags"], "--tag"),
        backend_options=backend_options_from(options),
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="batcat_nb")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging.")
def cli(verbose: bool) -> None:
    """Run Jupyter notebooks as tracked batch jobs."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="batcat: %(levelname)s: %(message)s",
    )
    logging.getLogger("batcat_nb").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("mlflow").setLevel(logging.DEBUG if verbose else logging.WARNING)


def sweep_from_options(options: dict[str, Any]) -> Any:
    """The sweep the ``run`` options ask for, or None for a single run."""
    if not options["grid"] and not options["sweep_file"]:
        return None
    from .sweep import SweepRequest, grid_combinations, load_sweep_file, parse_grid

    combinations = grid_combinations(parse_grid(list(options["grid"]))) if options["grid"] else []
    if options["sweep_file"]:
        combinations += load_sweep_file(options["sweep_file"])
    return SweepRequest(
        base=request_from_options(options),
        combinations=combinations,
        objective=options["objective"],
        maximize=options["maximize"],
        max_parallel=options["max_parallel"],
        fail_fast=options["fail_fast"],
        rerun=options["rerun"],
    )


@cli.command()
@run_options
@click.option("--no-wait", is_flag=True, help="Return once the job is submitted (as `batcat submit`).")
def run(no_wait: bool, **options: Any) -> None:
    """Execute NOTEBOOK in a fresh kernel and record it as an MLflow run (or a sweep of runs)."""
    from . import api

    if no_wait:
        from .jobs_cli import submit_and_report

        if options["grid"] or options["sweep_file"]:
            raise UsageError("--no-wait starts one run; a sweep (--grid, --sweep) waits for its runs")
        submit_and_report(request_from_options(options))
        return
    sweep = sweep_from_options(options)
    if sweep is not None:
        from .sweep import run_sweep

        outcome: Any = run_sweep(sweep)
    else:
        outcome = api.run(request_from_options(options))
    click.echo(str(outcome))
    if not outcome.ok:
        sys.exit(EXIT_INTERRUPTED if outcome.interrupted else EXIT_FAILED)


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
def inspect(notebook: str) -> None:
    """List the parameters NOTEBOOK declares: types, defaults and help."""
    from .notebook import load_notebook

    nb = load_notebook(notebook)
    declared = nb.parameters()
    click.echo(f"Parameters of {nb.path}")
    if declared is None:
        click.echo("  (no cell tagged 'parameters': values are injected at the top)")
        return
    width = max((len(p.name) for p in declared), default=0)
    for p in declared:
        kind = p.type_name or "any"
        line = f"  {p.name:<{width}}  {kind:<6} (default {p.default})"
        click.echo(f"{line}  {p.help}".rstrip())


@cli.command()
@click.option("--port", default=5000, show_default=True)
@click.option("--tracking-uri", default=None, help="Store to show (default: the project's).")
def ui(port: int, tracking_uri: str | None) -> None:
    """Serve the MLflow UI for the project's tracking store on 127.0.0.1."""
    import importlib.util
    import os

    from .tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    if importlib.util.find_spec("mlflow.server") is None or importlib.util.find_spec("flask") is None:
        raise UsageError("the MLflow UI needs the full mlflow package: pip install 'batcat_nb[ui]'")
    click.echo(f"MLflow UI for {uri} at http://127.0.0.1:{port}", err=True)
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execvp(
        sys.executable,
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
    )


@cli.group()
def agent() -> None:
    """The warm helper that makes repeated local runs start at once."""


@agent.command("status")
def agent_status() -> None:
    """List the running agents."""
    from . import agent as agents

    found = agents.running_agents()
    for path, info in found:
        click.echo(f"{path.stem}  pid {info['pid']}  idle {info.get('idle', 0):.0f}s")
    if not found:
        click.echo("no agent is running")


@agent.command("stop")
def agent_stop() -> None:
    """Stop every running agent (they also stop by themselves after 10 idle minutes)."""
    from . import agent as agents

    click.echo(f"stopped {agents.stop_agents()} agent(s)")


def _add_job_commands() -> None:
    from .build_cli import build
    from .jobs_cli import register

    register(cli)  # submit, status, logs, stop, list, download
    cli.add_command(build)


_add_job_commands()


def main() -> None:
    """Entry point: user mistakes become one line and exit 2, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("batcat: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BatcatError as exc:
        click.echo(f"batcat: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("batcat: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
