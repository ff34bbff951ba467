"""``batcat runs reconcile``: complete the runs whose launcher is gone."""

from __future__ import annotations

import click


@click.group()
def runs() -> None:
    """The MLflow runs of batcat jobs."""


@runs.command("reconcile")
@click.option("--tracking-uri", default=None, help="Store to look at (default: the project's).")
def reconcile(tracking_uri: str | None) -> None:
    """Complete every RUNNING run whose job has ended: from its manifest, or FAILED with the reason."""
    from ..reconcile import reconcile_store
    from ..tracking import Tracker, default_tracking_uri

    completed = reconcile_store(Tracker(tracking_uri or default_tracking_uri()))
    for run_id, status in completed:
        click.echo(f"{run_id} {status}")
    click.echo(f"{len(completed)} run(s) completed", err=True)
