"""The Python environment a job ran in, as ``environment.txt`` beside its executed notebook.

Read from the ``*.dist-info`` folder names on the kernel's ``sys.path`` (a directory listing,
about a millisecond) rather than from each distribution's metadata (about a second for 200
packages on a busy machine) or a ``pip freeze`` subprocess. The kernel usually runs the
worker's own interpreter; when its kernelspec names another one, that interpreter is asked for
its version and ``sys.path`` once (a ``python -c``, some 30 ms). A distribution installed from
a path, a URL or in editable mode (it has a ``direct_url.json``, PEP 610) is marked ``# not from an index``.

``recorded(text)`` reads such a file back for ``batcat rerun --from-environment``, strictly: the
file may come from a shared store, so any line but ``NAME==VERSION`` and comments is refused
rather than ever reaching pip as an option (``--index-url``, ``-e``, ``-r``) or a URL.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

ENVIRONMENT_NAME = "environment.txt"
NOT_FROM_INDEX = "# not from an index"
_PIN = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==([0-9][A-Za-z0-9.+!_-]*)")
_PYTHON = re.compile(r"# python (\d+\.\d+)\.\S+ .*")

log = logging.getLogger("batcat_nb")


def installed() -> dict[str, str]:
    """Every distribution importable here: normalised name -> version (the first on sys.path wins)."""
    return {name: version for name, (version, _) in _distributions(sys.path).items()}


def _distributions(path: list[str]) -> dict[str, tuple[str, bool]]:
    """Normalised name -> (version, installed from a path or URL rather than an index)."""
    found: dict[str, tuple[str, bool]] = {}
    for entry in path:
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
            if _normalise(project) not in found:
                direct = os.path.exists(os.path.join(entry, name, "direct_url.json"))
                found[_normalise(project)] = (version.partition("-")[0], direct)
    return found


def describe(python: str | None = None) -> str:
    """``# python X.Y.Z (implementation, platform)`` then ``name==version`` lines, sorted: of the
    interpreter ``python`` (default: this one)."""
    version, implementation, system, path = _interpreter(python)
    header = f"# python {version} ({implementation}, {system})"
    found = sorted(_distributions(path).items())
    lines = [f"{k}=={v}  {NOT_FROM_INDEX}" if direct else f"{k}=={v}" for k, (v, direct) in found]
    return "\n".join([header, *lines]) + "\n"


def write(directory: Path, python: str | None = None) -> Path | None:
    """``environment.txt`` of interpreter ``python`` in ``directory``; a failure is logged,
    never the job's end."""
    path = directory / ENVIRONMENT_NAME
    try:
        path.write_text(describe(python))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("cannot write %s: %s", path, exc)
        return None
    return path


def kernel_python(argv: list[str]) -> str | None:
    """The interpreter a kernelspec's ``argv`` starts, when it starts one (``python...``)."""
    program = shutil.which(argv[0]) if argv else None
    return program if program and os.path.basename(program).startswith("python") else None


_ASK = (
    "import json, platform, sys; print(json.dumps("
    "[platform.python_version(), platform.python_implementation(), sys.platform, sys.path]))"
)


def _interpreter(python: str | None) -> tuple[str, str, str, list[str]]:
    """Version, implementation, platform and ``sys.path`` of ``python``; asked only when it is
    not this interpreter: another file, or the same file from another folder (a venv's ``python``
    links to its base interpreter, ``bin/python`` and ``bin/python3`` are one)."""
    if python is None or _same_interpreter(python, sys.executable):
        return platform.python_version(), platform.python_implementation(), sys.platform, sys.path
    answer = subprocess.run([python, "-c", _ASK], capture_output=True, text=True, timeout=30, check=True)
    version, implementation, system, path = json.loads(answer.stdout)
    return version, implementation, system, path


def _same_interpreter(one: str, other: str) -> bool:
    folders = (os.path.dirname(os.path.abspath(p)) for p in (one, other))
    return len(set(folders)) == 1 and os.path.realpath(one) == os.path.realpath(other)


@dataclass
class Recorded:
    """A recorded ``environment.txt``: the Python it ran and its distributions."""

    python: str  # major.minor
    pins: dict[str, str]  # normalised name -> version, installable from an index
    not_from_index: list[str]  # name==version of those installed from a path or URL


def recorded(text: str, source: str) -> Recorded:
    """Read ``environment.txt`` back; any line but a pin or a comment is refused (see the module)."""
    lines = text.splitlines()
    header = _PYTHON.fullmatch(lines[0].strip()) if lines else None
    if header is None:
        raise UsageError(f"{source} does not start with '# python X.Y.Z': not an environment batcat recorded")
    pins: dict[str, str] = {}
    not_from_index: list[str] = []
    for number, line in enumerate(lines[1:], 2):
        line = line.strip()
        pin = line.removesuffix(NOT_FROM_INDEX).rstrip()
        found = _PIN.fullmatch(pin)
        if found and pin != line:
            not_from_index.append(pin)
        elif found:
            pins[_normalise(found.group(1))] = found.group(2)
        elif line and not line.startswith("#"):
            raise UsageError(
                f"{source} line {number} is not NAME==VERSION: {line[:80]!r}; refusing to build from it "
                "(was the file edited?); run in another image with --image IMAGE"
            )
    return Recorded(header.group(1), pins, not_from_index)


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
