"""``batcat workflow``: check and run a pipeline of notebooks kept in a YAML file.

The group takes every command of ``COMMANDS``; the AWS commands (deploy, trigger, ...) live in
their own module and join with one line.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .exit_codes import EXIT_FAILED, EXIT_INTERRUPTED
from .options import parameters_option
from .workflow_deploy import COMMANDS as AWS_COMMANDS


@click.group()
def workflow() -> None:
    """Pipelines of notebooks (workflows/*.yaml): check, run here, deploy to AWS Step Functions."""


@click.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def check(file: str) -> None:
    """Check FILE completely (steps, needs, data flow, parameters, schedule) without running it."""
    from ..workflow import check as check_file

    loaded = check_file(file)
    levels = loaded.levels()
    triggers = [f"{k} {v}" for k, v in (("schedule", loaded.schedule), ("on_s3", loaded.on_s3)) if v]
    click.echo(
        f"ok: {len(loaded.steps)} steps in {len(levels)} stages "
        f"({' -> '.join(', '.join(level) for level in levels)})"
        + (f"; {'; '.join(triggers)}" if triggers else "")
    )


@click.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@parameters_option("Workflow parameter (typed as papermill does); reaches every step that declares it.")
@click.option("--backend", "-b", default=None, help="local (default), docker, sagemaker.")
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    default=None,
    help="Steps at once (default: the number of cores).",
)
@click.option("--resume", is_flag=True, help="Re-run only the steps the last execution did not finish.")
@click.option("--output-dir", "-o", default=None, help="Where executions' folders go (default: batcat-runs).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default: as batcat run).")
@click.option("--experiment", "-e", default=None, help="MLflow experiment (default: the workflow's name).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def run(
    file: str,
    values: tuple[tuple[str, str], ...],
    backend: str | None,
    max_parallel: int | None,
    resume: bool,
    output_dir: str | None,
    tracking_uri: str | None,
    experiment: str | None,
    no_progress: bool,
) -> None:
    """Run FILE's steps from here: in dependency order, independent ones at once.

    One parent MLflow run for the execution, one child run per step. Exit 1 when a step failed.
    """
    from .. import workflow as api
    from ..parameters import collect

    options: dict[str, Any] = {"progress": not no_progress}
    options.update({k: v for k, v in (("output_dir", output_dir), ("tracking_uri", tracking_uri),
                                      ("experiment", experiment)) if v is not None})  # fmt: skip
    outcome = api.run(
        file,
        parameters=collect(values=values),
        backend=backend,
        max_parallel=max_parallel,
        resume=resume,
        **options,
    )
    click.echo(str(outcome))
    if not outcome.ok:
        sys.exit(EXIT_INTERRUPTED if outcome.interrupted else EXIT_FAILED)


COMMANDS: list[click.Command] = [check, run, *AWS_COMMANDS]
for command in COMMANDS:
    workflow.add_command(command)
