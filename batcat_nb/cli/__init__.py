"""``batcat``: the command line. Thin: parse, build a request, call the API, print.

The group lives here; ``run`` (with ``submit``, ``inspect``, ``ui``), ``agent`` and ``workflow``
have their modules, and each backend adds its own commands (``backends.BACKEND_CLIS``).
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from ..backends import BACKEND_CLIS
from ..errors import BatcatError, ServiceError
from . import signals
from .exit_codes import EXIT_FAILED, EXIT_USAGE


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


def _add_commands() -> None:
    from .agent import agent
    from .rerun import rerun
    from .run import inspect, run, submit, ui
    from .runs import runs
    from .workflow import workflow

    for command in (run, submit, rerun, inspect, ui, agent, runs, workflow):
        cli.add_command(command)
    for target in BACKEND_CLIS.values():
        for command in importlib.import_module(target).COMMANDS:
            cli.add_command(command)


_add_commands()


def main() -> None:
    """Entry point: user mistakes become one line and exit 2, a service's failure one line and
    exit 1 (as a failed run: the user did nothing wrong), never a traceback."""
    signals.install()
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("batcat: interrupted", err=True)
        sys.exit(signals.exit_code())
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ServiceError as exc:
        click.echo(f"batcat: error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except BatcatError as exc:
        click.echo(f"batcat: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("batcat: interrupted", err=True)
        sys.exit(signals.exit_code())
