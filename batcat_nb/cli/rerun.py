"""``batcat rerun RUN_ID``: run a recorded run again, as it was, and compare the outcome."""

from __future__ import annotations

import sys

import click

from ..errors import UsageError
from .exit_codes import EXIT_FAILED, EXIT_INTERRUPTED
from .options import parameters_option


def image_options(image: str | None, base_image: str | None, from_environment: bool) -> dict[str, str]:
    """``--image`` and ``--base-image`` as the backend options they override."""
    if base_image and not from_environment:
        raise UsageError("--base-image is the base of the image --from-environment builds: add that flag")
    return {k: v for k, v in (("image", image), ("base_image", base_image)) if v}


@click.command()
@click.argument("run_id")
@parameters_option("Change one parameter, typed as papermill does; the others stay as recorded.")
@click.option("--backend", "-b", default=None, help="Run it elsewhere (default: where it ran).")
@click.option("--tracking-uri", default=None, help="The store holding RUN_ID (default: the project's).")
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Resubmit after an infrastructure failure, N times.",
)
@click.option("--image", default=None, metavar="IMAGE", help="Run it in this image, not its recorded one.")
@click.option(
    "--from-environment",
    is_flag=True,
    help="Build the image from the run's environment.txt (Docker): its distributions pinned.",
)
@click.option(
    "--base-image", default=None, metavar="IMAGE", help="With --from-environment: the base image to build on."
)
@click.option("--no-progress", is_flag=True, help="Do not show the cells' progress.")
def rerun(
    run_id: str,
    values: tuple[tuple[str, str], ...],
    backend: str | None,
    tracking_uri: str | None,
    retries: int | None,
    image: str | None,
    from_environment: bool,
    base_image: str | None,
    no_progress: bool,
) -> None:
    """Execute RUN_ID again: its notebook, parameters, kernel, backend, image and inputs."""
    from ..parameters import collect
    from ..reruns import rerun as rerun_run

    outcome = rerun_run(
        run_id,
        collect(values=values),
        backend=backend,
        tracking_uri=tracking_uri,
        backend_options=image_options(image, base_image, from_environment),
        from_environment=from_environment,
        retries=retries,
        progress=not no_progress,
    )
    click.echo(str(outcome))
    if not outcome.ok:
        sys.exit(EXIT_INTERRUPTED if outcome.interrupted else EXIT_FAILED)
