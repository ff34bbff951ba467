"""``batcat rerun RUN_ID``: run a recorded run again, as it was.

(Not ``rerun.py``: importing a submodule named ``rerun`` would replace the function
``batcat_nb.rerun`` with the module; sweeps live in ``sweeps.py`` for the same reason.)

The exact notebook it ran (the git commit when it still holds the same bytes, else the
recorded ``.ipynb`` artifact without its outputs and injected cell), the same given parameters
(only ``-p`` overrides change), kernel, backend, backend options and image (by digest; what a
backend does when that image is gone, or with ``from_environment``, is its ``rerun_image``
hook), and the same inputs: objects of a versioned S3 bucket are read in their recorded
versions; any other input that changed since is named in the summary.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import api, environment, replay
from .backends import registry
from .backends.base import RerunImage
from .errors import UsageError
from .notebook import Notebook, read_notebook_bytes
from .result import RunResult
from .spec import RunRequest
from .storage import download_versions, is_s3
from .tracking import (
    TAG_BACKEND,
    TAG_KERNEL,
    TAG_NOTEBOOK_PATH,
    TAG_NOTEBOOK_SHA,
    TAG_RERUN_OF,
    Tracker,
    default_tracking_uri,
)

log = logging.getLogger("batcat_nb")

TAG_NOTEBOOK_FROM = "batcat.rerun.notebook_from"  # "git <commit>" or "artifact"
_INJECTED_TAG = "injected-parameters"
_GIT_COMMIT = "mlflow.source.git.commit"
_RUN_METADATA = ("papermill", "execution")  # what executing a notebook adds to its metadata


@dataclass
class RerunResult:
    """A rerun's RunResult, and how it compares with the original run."""

    result: RunResult
    original_run_id: str
    original_metrics: dict[str, float]
    notebook_from: str
    changed_inputs: dict[str, str] = field(default_factory=dict)  # channel -> what changed

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def interrupted(self) -> bool:
        return self.result.interrupted

    def metric_changes(self) -> list[tuple[str, str]]:
        """(metric, "equal" / "+0.12 (from 1.0 to 1.12)" / "new" / "missing") for every metric."""
        rows = []
        for name in sorted({*self.original_metrics, *self.result.metrics}):
            before, after = self.original_metrics.get(name), self.result.metrics.get(name)
            if before is None:
                rows.append((name, f"new ({after:.4g})"))
            elif after is None:
                rows.append((name, f"missing (was {before:.4g})"))
            elif before == after:
                rows.append((name, f"equal ({after:.4g})"))
            else:
                rows.append((name, f"{after - before:+.4g} (from {before:.4g} to {after:.4g})"))
        return rows

    def __str__(self) -> str:
        origin = f"  rerun of    {self.original_run_id} (notebook from {self.notebook_from})"
        lines = [str(self.result), origin]
        for name, change in self.changed_inputs.items():
            lines.append(f"  input {name} changed since: {change}")
        lines += [f"  vs original {name}: {change}" for name, change in self.metric_changes()]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def rerun(
    run_id: str,
    parameters: dict[str, Any] | None = None,
    *,
    backend: str | None = None,
    tracking_uri: str | None = None,
    backend_options: dict[str, Any] | None = None,
    from_environment: bool = False,
    **options: Any,
) -> RerunResult:
    """Run ``run_id`` again as it was, with ``parameters`` overriding its given ones; wait for it.

    ``backend_options`` override the recorded ones (``image``: run in this image instead);
    ``from_environment`` builds the image from the run's ``environment.txt``. ``options`` are
    further RunRequest fields (output_dir, progress, log_output, retries...).
    """
    tracker = Tracker(tracking_uri or default_tracking_uri())
    original = _get_run(tracker, run_id)
    tags = original.data.tags
    missing = [t for t in (TAG_NOTEBOOK_PATH, TAG_NOTEBOOK_SHA, TAG_KERNEL, TAG_BACKEND) if t not in tags]
    if missing:
        names = ", ".join(missing)
        raise UsageError(f"run {run_id} cannot be re-run: it has no {names} tag (not a batcat run)")
    with tempfile.TemporaryDirectory(prefix="batcat-rerun-") as scratch:
        artifacts = _Artifacts(tracker, run_id, Path(scratch))
        request_record = artifacts.json(replay.REQUEST_NAME, "recorded before batcat could re-run runs")
        notebook, notebook_from = _recorded_notebook(tags, artifacts, run_id)
        inputs, changed = _recorded_inputs(request_record, artifacts)
        chosen = backend or request_record["backend"]
        same, overrides = chosen == request_record["backend"], backend_options or {}
        image = RerunImage(
            run_id,
            tags if same else {},
            {**(request_record["backend_options"] if same else {}), **overrides},
            _recorded_environment(artifacts) if from_environment else None,
            Path(scratch),
        )
        backend_opts, image_tags = _in_image(image, chosen, "image" in overrides)
        request = RunRequest(
            notebook=str(notebook.path),
            parameters={**request_record["parameters"], **(parameters or {})},
            backend=chosen,
            experiment=request_record["experiment"],
            inputs=inputs,
            outputs=request_record["outputs"],
            kernel=tags[TAG_KERNEL],
            timeout=request_record["timeout"],
            execution_timeout=request_record["execution_timeout"],
            tracking_uri=tracker.uri,
            tags={TAG_RERUN_OF: run_id, TAG_NOTEBOOK_FROM: notebook_from, **image_tags},
            backend_options=backend_opts,
            **options,
        )
        spec = api.resolve_spec(request, notebook)
        spec.notebook_sha256 = tags[TAG_NOTEBOOK_SHA]  # the same notebook, whatever its bytes now
        result = api.wait(api.submit_spec(spec))
    return RerunResult(result, run_id, dict(original.data.metrics), notebook_from, changed)


def _get_run(tracker: Tracker, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return tracker.client.get_run(run_id)
    except MlflowException:
        raise UsageError(
            f"no run {run_id} in {tracker.uri}; check the id, or pass --tracking-uri for another store"
        ) from None


class _Artifacts:
    """The original run's artifacts, downloaded on demand."""

    def __init__(self, tracker: Tracker, run_id: str, scratch: Path) -> None:
        self.tracker, self.run_id, self.scratch = tracker, run_id, scratch

    def path(self, name: str) -> Path | None:
        try:
            with _no_progress_bar():
                return Path(self.tracker.client.download_artifacts(self.run_id, name, str(self.scratch)))
        except Exception as exc:  # MLflow raises several kinds for an absent artifact
            log.debug("artifact %s of %s: %s", name, self.run_id, exc)
            return None

    def json(self, name: str, why_missing: str) -> Any:
        path = self.path(name)
        if path is None:
            raise UsageError(f"run {self.run_id} cannot be re-run: it has no {name} artifact ({why_missing})")
        return json.loads(path.read_text())


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar for every download, however small: not for these."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _recorded_notebook(tags: dict[str, str], artifacts: _Artifacts, run_id: str) -> tuple[Notebook, str]:
    """The notebook the run executed: from its git commit if that still holds the same bytes,
    else its executed ``.ipynb`` artifact stripped of outputs and the injected cell."""
    original = Path(tags[TAG_NOTEBOOK_PATH])
    commit = tags.get(_GIT_COMMIT)
    raw = _git_show(original, commit) if commit else None
    if commit and raw is not None and hashlib.sha256(raw).hexdigest() == tags[TAG_NOTEBOOK_SHA]:
        content = read_notebook_bytes(original, raw).content
        return _placed(original, content, artifacts.scratch), f"git {commit[:12]}"
    executed = artifacts.path(f"{original.stem}.ipynb")
    if executed is None:
        held = f" and git commit {commit[:12]} no longer holds it" if commit else ""
        raise UsageError(
            f"run {run_id} cannot be re-run: its executed notebook {original.stem}.ipynb "
            f"is not among its artifacts{held}"
        )
    return _placed(original, strip_run(json.loads(executed.read_text())), artifacts.scratch), "artifact"


def _placed(original: Path, content: dict[str, Any], scratch: Path) -> Notebook:
    """The notebook at its original path (its folder is the job's code), or, when that file is
    gone, written to a new folder in the rerun's ``scratch``: backends stage the file itself."""
    if original.exists():
        return Notebook(original, content, raw=b"")
    location = Path(tempfile.mkdtemp(prefix="notebook-", dir=scratch)) / f"{original.stem}.ipynb"
    location.write_text(json.dumps(content))
    log.warning("%s no longer exists: the rerun runs without the files that were beside it", original)
    return Notebook(location, content, raw=b"")


def strip_run(content: dict[str, Any]) -> dict[str, Any]:
    """An executed notebook as it was before papermill ran it: no injected cell, no outputs."""
    cells = []
    for cell in content.get("cells", []):
        if _INJECTED_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        metadata = cell.get("metadata", {})
        cell = dict(cell, metadata={k: v for k, v in metadata.items() if k not in _RUN_METADATA})
        if cell.get("cell_type") == "code":
            cell.update(outputs=[], execution_count=None)
        cells.append(cell)
    top = {k: v for k, v in content.get("metadata", {}).items() if k not in _RUN_METADATA}
    return {**content, "cells": cells, "metadata": top}


def _git_show(path: Path, commit: str) -> bytes | None:
    if not path.parent.is_dir():
        return None
    try:
        done = subprocess.run(
            ["git", "show", f"{commit}:./{path.name}"], cwd=path.parent, capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _recorded_inputs(
    request_record: dict[str, Any], artifacts: _Artifacts
) -> tuple[dict[str, str], dict[str, str]]:
    """The inputs to read, and what changed in those that cannot be read as they were."""
    inputs = dict(request_record["inputs"])
    if not inputs:
        return inputs, {}
    listings = artifacts.json(replay.INPUTS_NAME, "recorded before batcat fingerprinted inputs")
    changed: dict[str, str] = {}
    for name, recorded in listings.items():
        now = replay.listing(recorded["uri"])
        if now["fingerprint"] == recorded["fingerprint"]:
            continue
        versions = {e["Key"]: e["VersionId"] for e in recorded["entries"] if e.get("VersionId")}
        if is_s3(recorded["uri"]) and len(versions) == len(recorded["entries"]):
            target = Path(tempfile.mkdtemp(prefix="input-", dir=artifacts.scratch))  # not named by the record
            download_versions(recorded["uri"], target, versions)
            inputs[name] = str(target)
            log.info("input %s: reading the recorded versions of %d objects", name, len(versions))
        else:
            changed[name] = _difference(recorded["entries"], now["entries"])
    return inputs, changed


def _difference(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    """``2 files changed (a.csv, b.csv), 1 added, 1 removed`` between two listings."""
    key = "path" if before and "path" in before[0] or after and "path" in after[0] else "Key"
    old, new = {e[key]: e for e in before}, {e[key]: e for e in after}
    parts = []
    for label, names in (
        ("changed", sorted(n for n in old.keys() & new.keys() if old[n] != new[n])),
        ("added", sorted(new.keys() - old.keys())),
        ("removed", sorted(old.keys() - new.keys())),
    ):
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f"{len(names)} {label} ({shown})")
    return "; ".join(parts) or "listing differs"


def _recorded_environment(artifacts: _Artifacts) -> environment.Recorded:
    path = artifacts.path(environment.ENVIRONMENT_NAME)
    if path is None:
        raise UsageError(
            f"run {artifacts.run_id} has no {environment.ENVIRONMENT_NAME} artifact to build an image "
            "from (recorded before batcat recorded environments); leave out --from-environment"
        )
    return environment.recorded(path.read_text(), f"{environment.ENVIRONMENT_NAME} of run {artifacts.run_id}")


def _in_image(image: RerunImage, backend: str, image_given: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The backend options that run the rerun in the image the backend's ``rerun_image`` hook
    chooses (the recorded one, unless the caller named one), and the tags it adds to the run."""
    if image_given and image.environment is not None:
        raise UsageError("--image and --from-environment contradict each other: choose one")
    hook = getattr(registry.get(backend), "rerun_image", None)
    if hook is None and image.environment is not None:
        raise UsageError(
            f"the {backend} backend runs in no image to build from {environment.ENVIRONMENT_NAME}; "
            "choose a backend that builds images (--backend docker)"
        )
    if hook is None or image_given:
        return image.options, {}
    options, tags = hook(image)
    return options, tags
