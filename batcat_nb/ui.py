"""Where a run can be seen in the MLflow UI, or the exact command that shows it.

A tracking server's URL is its UI. For a local store, ``batcat ui`` records itself while it runs
(``<cache>/ui/<store hash>.json``: its pid and address), so summaries printed meanwhile link to
the run's page; with no UI running they name the command that starts one for that store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

from .config import cache_dir
from .redact import mask_uri


def _record_path(tracking_uri: str) -> Path:
    digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]
    return cache_dir() / "ui" / f"{digest}.json"


def record_ui(tracking_uri: str, url: str) -> None:
    """Note that this process serves the UI of ``tracking_uri`` at ``url`` (``batcat ui``)."""
    path = _record_path(tracking_uri)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps({"pid": os.getpid(), "url": url, "uri": tracking_uri}))


def running_ui(tracking_uri: str) -> str | None:
    """The address of a UI serving ``tracking_uri``: the server itself, or a live ``batcat ui``."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    try:
        record = json.loads(_record_path(tracking_uri).read_text())
        os.kill(int(record["pid"]), 0)  # still running?
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(record["url"]) if record.get("uri") == tracking_uri else None


def run_url(tracking_uri: str, experiment_id: str, run_id: str, ui_base: str | None = None) -> str | None:
    """The run's page in the MLflow UI, when a UI is known (``ui_base`` first)."""
    base = ui_base or running_ui(tracking_uri)
    if base is None:
        return None
    return mask_uri(f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}")


def ui_command(tracking_uri: str) -> str:
    """The command that serves ``tracking_uri``'s UI: ``batcat ui`` for the project's own store."""
    from .tracking import default_tracking_uri

    if tracking_uri == default_tracking_uri():
        return "batcat ui"
    return f"batcat ui --tracking-uri {shlex.quote(mask_uri(tracking_uri))}"
