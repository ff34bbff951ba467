"""The Docker backend's command line: ``batcat build`` and the Docker options of ``batcat run``.

``batcat build`` prints the runner image of this project's environment, built only when it
changed. ``--image``, ``--env`` and ``--include`` are shared with SageMaker (``cli.options``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from ...errors import UsageError

log = logging.getLogger("batcat_nb")

SECTION = "Docker"
# The Docker options of ``batcat run`` (and of the magics, which parse with it): click's arguments;
# each one's destination is its DockerConfig key.
RUN_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--base-image",), {"default": None, "metavar": "IMAGE", "help": "Base of the runner image."}),
    (
        ("--requirements",),
        {
            "default": None,
            "metavar": "FILE",
            "help": "The project's requirements (default: requirements.txt by the notebook).",
        },
    ),
    (("--cpus",), {"type": float, "default": None, "help": "CPUs for the job."}),
    (("--memory",), {"default": None, "metavar": "SIZE", "help": "Memory limit (512m, 2g)."}),
    (("--gpus",), {"default": None, "metavar": "all|N", "help": "GPUs for the job."}),
    (
        ("--network",),
        {
            "default": None,
            "metavar": "NAME",
            "help": "Docker network of the job (default: bridge; host to reach this machine's loopback).",
        },
    ),
    (
        ("--as-role",),
        {
            "is_flag": True,
            "default": None,
            "help": "Move the job's S3 data as --role (STS AssumeRole), as SageMaker would.",
        },
    ),
    (
        ("--network-isolation",),
        {
            "is_flag": True,
            "default": None,
            "help": "No network at all (SageMaker's EnableNetworkIsolation; Docker and SageMaker).",
        },
    ),
    (
        ("--pass-aws-credentials",),
        {
            "is_flag": True,
            "default": None,
            "help": "Give the job this host's AWS credentials (never stored).",
        },
    ),
]


@click.command("build")
@click.option(
    "--requirements",
    "-r",
    type=click.Path(dir_okay=False),
    default=None,
    help="The project's requirements (default: requirements.txt here or in the project directory).",
)
@click.option(
    "--base-image", default=None, help="Base image (default: python:3.11-slim, else batcat-base:bookworm)."
)
@click.option("--tag", "extra_tag", default=None, metavar="NAME[:TAG]", help="Also tag it NAME:TAG.")
@click.option(
    "--wheelhouse/--no-wheelhouse",
    default=None,
    help="Install from wheels resolved on this host (default: when the build cannot reach an index).",
)
@click.option("--rebuild", is_flag=True, help="Build even if the image exists (layer cache applies).")
@click.option(
    "--push", is_flag=True, help="Push it for SageMaker (ECR repository batcat-runner, created if missing)."
)
@click.option(
    "--repository", default=None, metavar="URI", help="Push to this repository (HOST/NAME) instead."
)
@click.option(
    "--ecr/--no-ecr",
    default=None,
    help="Whether --repository is an ECR repository to create and log in to (default: from its host).",
)
@click.option("--region", default=None, help="AWS region of the ECR repository.")
def build(
    requirements: str | None,
    base_image: str | None,
    extra_tag: str | None,
    wheelhouse: bool | None,
    rebuild: bool,
    push: bool,
    repository: str | None,
    ecr: bool | None,
    region: str | None,
) -> None:
    """Build the runner image for Docker and SageMaker jobs; print its tag and digest.

    With --push, also push it and print the URI that SageMaker jobs take as --image.
    """
    from .backend import docker_config
    from .container import docker_client
    from .image import ensure_image, find_requirements

    if not push and (repository or ecr is not None or region):
        raise UsageError("--repository, --ecr and --region say where to push; add --push")
    config = docker_config({"base_image": base_image, "requirements": requirements, "wheelhouse": wheelhouse})
    image = ensure_image(
        docker_client(),
        base_image=config.base_image,
        requirements=config.requirements or find_requirements(Path.cwd()),
        extra_tag=extra_tag,
        wheelhouse=config.wheelhouse,
        rebuild=rebuild,
        on_log=_show_step,
    )
    click.echo(image.tag)
    click.echo(f"  digest  {image.digest}")
    click.echo(f"  base    {image.base_image}")
    if extra_tag:
        click.echo(f"  also    {extra_tag}")
    click.echo(f"  {'built' if image.built else 'reused':<6}  in {image.seconds:.1f}s")
    if push:
        _push(image.tag, repository, ecr, region)


def _push(local_tag: str, repository: str | None, ecr: bool | None, region: str | None) -> None:
    from ..sagemaker.registry import ecr_repository_uri, push_image

    pushed = push_image(local_tag, repository or ecr_repository_uri(region=region), ecr=ecr, region=region)
    if pushed.pushed:
        click.echo(f"  pushed  {pushed.uri}  ({pushed.digest})")
    else:
        click.echo(f"  pushed  {pushed.uri}  (already in the registry: {pushed.digest})")
    click.echo(f"  use     --image {pushed.uri}")


def _show_step(line: str) -> None:
    """Each Dockerfile step on stderr; the rest of the build log at debug level (``batcat -v``)."""
    from .image import is_step

    if is_step(line):
        click.echo(line if len(line) <= 120 else line[:117] + "...", err=True)
    else:
        log.debug("build: %s", line)


COMMANDS = [build]
