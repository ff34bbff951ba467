"""The Python environment a job ran in, as ``environment.txt`` beside its executed notebook.

Read from the ``*.dist-info`` folder names on ``sys.path`` (a directory listing, about a
millisecond) rather than from each distribution's metadata (about a second for 200 packages on
a busy machine) or a ``pip freeze`` subprocess.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from pathlib import Path

ENVIRONMENT_NAME = "environment.txt"

log = logging.getLogger("batcat_nb")


def installed() -> dict[str, str]:
    """Every distribution importable here: normalised name -> version (the first on sys.path wins)."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            stem, dot, kind = name.rpartition(".")
            if not dot or kind not in ("dist-info", "egg-info"):
                continue
            project, _, version = stem.partition("-")
            if not version:  # a legacy egg-info folder without its version: ask its metadata
                from importlib.metadata import Distribution

                version = Distribution.at(os.path.join(entry, name)).version or ""
            found.setdefault(_normalise(project), version.partition("-")[0])
    return found


def describe() -> str:
    """``# python X.Y.Z (implementation, platform)`` then ``name==version`` lines, sorted."""
    header = f"# python {platform.python_version()} ({platform.python_implementation()}, {sys.platform})"
    return "\n".join([header, *(f"{k}=={v}" for k, v in sorted(installed().items()))]) + "\n"


def write(directory: Path) -> Path | None:
    """``environment.txt`` in ``directory``; a failure is logged, never the job's end."""
    path = directory / ENVIRONMENT_NAME
    try:
        path.write_text(describe())
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)
        return None
    return path


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
