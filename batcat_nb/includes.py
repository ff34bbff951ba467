"""What ``--include DIR`` ships: what git would commit, never secrets.

A directory is walked as git would see it: ``.gitignore`` files (from the repository's root down)
and ``.batcatignore`` files (same syntax, for what git keeps but a job does not need) are
honoured, with git's own rules (gitwildmatch, through ``pathspec``). Whatever they say, ``.git``,
``.env`` files and key or credential files are left out: a job's code channel is copied to S3
and into containers. A file named one by one (``--include .env``) is always shipped: that is an
explicit choice, not an accident of a folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("batcat_nb")

IGNORE_FILES = (".gitignore", ".batcatignore")
# Left out of every --include'd directory (gitwildmatch, as in a .gitignore).
NEVER_SHIPPED = (
    ".git/",
    ".env",
    ".env.*",
    "*.env",
    ".aws/",
    ".ssh/",
    ".netrc",
    ".pypirc",
    ".pgpass",
    "credentials",
    "credentials.json",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
)


def shipped_files(path: Path) -> list[Path]:
    """The files ``--include path`` ships, sorted: ``path`` itself if it is a file."""
    if path.is_file():
        return [path]
    import pathspec

    never = pathspec.GitIgnoreSpec.from_lines(NEVER_SHIPPED)
    rules: dict[Path, list[tuple[Path, Any]]] = {path: _inherited(path)}
    found, withheld = [], []
    for directory, subdirs, files in os.walk(path):
        here = Path(directory)
        applicable = rules[here] + _rules_in(here)
        for name in sorted(subdirs):
            child = here / name
            if _matches(never, path, child, True):
                withheld.append(child)
                subdirs.remove(name)
            elif _ignored(applicable, child, True):
                subdirs.remove(name)
            else:
                rules[child] = applicable
        for name in files:
            file = here / name
            if _matches(never, path, file, False):
                withheld.append(file)
            elif not _ignored(applicable, file, False) and file.is_file():
                found.append(file)
    if withheld:
        names = ", ".join(p.relative_to(path).as_posix() for p in sorted(withheld)[:5])
        log.warning(
            "--include %s: left out %s (never shipped from a folder: name a file on its own to ship it)",
            path,
            names + (", ..." if len(withheld) > 5 else ""),
        )
    return sorted(found)


def _inherited(directory: Path) -> list[tuple[Path, Any]]:
    """The ignore rules of the directories above ``directory``, up to its repository's root."""
    above = []
    for parent in directory.parents:
        above.append(parent)
        if (parent / ".git").exists():
            break
    else:
        return []  # not in a repository: only the folder's own files count
    return [rule for parent in reversed(above) for rule in _rules_in(parent)]


def _rules_in(directory: Path) -> list[tuple[Path, Any]]:
    import pathspec

    rules = []
    for name in IGNORE_FILES:
        file = directory / name
        if file.is_file():
            rules.append((directory, pathspec.GitIgnoreSpec.from_lines(file.read_text().splitlines())))
    return rules


def _ignored(rules: list[tuple[Path, Any]], path: Path, is_dir: bool) -> bool:
    """Git's verdict: the last rule that says anything about ``path`` (deeper files come later)."""
    verdict = False
    for base, spec in rules:
        said = spec.check_file(path.relative_to(base).as_posix() + ("/" if is_dir else "")).include
        if said is not None:
            verdict = said
    return verdict


def _matches(spec: Any, root: Path, path: Path, is_dir: bool) -> bool:
    return bool(spec.match_file(path.relative_to(root).as_posix() + ("/" if is_dir else "")))
