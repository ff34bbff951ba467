"""Where a notebook comes from: its git commit, branch, dirty flag and remote."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .redact import mask_uri


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_tags(notebook: Path) -> dict[str, str]:
    """MLflow source tags for the repository holding ``notebook``; empty outside git."""
    directory = notebook.resolve().parent
    commit = _git(directory, "rev-parse", "HEAD")
    if not commit:
        return {}
    tags = {"mlflow.source.git.commit": commit}
    branch = _git(directory, "rev-parse", "--abbrev-ref", "HEAD")
    if branch:
        tags["mlflow.source.git.branch"] = branch
    remote = _git(directory, "config", "--get", "remote.origin.url")
    if remote:
        tags["mlflow.source.git.repoURL"] = mask_uri(remote)  # a token in the remote stays here
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    tags["batcat.git.dirty"] = "true" if status else "false"
    return tags


def project_dir(start: Path | None = None) -> Path:
    """The nearest directory up from ``start`` holding pyproject.toml or .git, else ``start``."""
    start = (start or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").exists() or (directory / ".git").exists():
            return directory
    return start
