"""Settings: call arguments > ``BATCAT_*`` environment > ``[tool.batcat]`` in pyproject.toml > defaults.

Each section is a dataclass; unknown keys are errors naming the closest valid key.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomllib arrived in 3.11; tomli is the same parser under another name
    import tomli as tomllib

from .errors import ConfigError, did_you_mean
from .provenance import project_dir

T = TypeVar("T")


@dataclasses.dataclass
class CoreConfig:
    """``[tool.batcat]``: what every run uses."""

    backend: str = "local"
    experiment: str | None = None
    tracking_uri: str | None = None
    output_dir: str = "batcat-runs"
    kernel: str | None = None
    timeout: float | None = None
    retries: int = 0  # resubmissions of a job that failed for an infrastructure reason


def resolve(cls: type[T], section: str, args: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` for ``[tool.batcat.<section>]`` (``section=""`` for ``[tool.batcat]``)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    table = _pyproject_section(section)
    nested = {k for k, v in table.items() if isinstance(v, dict)}
    where = f"[tool.batcat{'.' + section if section else ''}]"
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in nested and not section:
            continue  # a backend's own table
        name = key.replace("-", "_")
        if name not in fields:
            raise ConfigError(f"unknown key '{key}' in {where} of pyproject.toml{did_you_mean(name, fields)}")
        values[name] = value
    prefix = "BATCAT_" + (section.upper() + "_" if section else "")
    for name in fields:
        env = os.environ.get(prefix + name.upper())
        if env is not None and env != "":
            values[name] = _coerce(env, hints[name], prefix + name.upper())
    for name, value in (args or {}).items():
        if name not in fields:
            raise ConfigError(f"unknown {section or 'run'} option '{name}'{did_you_mean(name, fields)}")
        if value is not None:
            values[name] = value
    return cls(**values)


def parse_pairs(entries: Iterable[str] | Mapping[str, Any] | str | None, what: str) -> dict[str, str]:
    """``NAME=VALUE`` entries (a list, or one comma-separated string) to a dict; a mapping is taken
    as it is. ``what`` names the option in the message when an entry is malformed or repeated."""
    if isinstance(entries, Mapping):
        return {str(k): str(v) for k, v in entries.items()}
    if isinstance(entries, str):
        entries = [part.strip() for part in entries.split(",") if part.strip()]
    pairs: dict[str, str] = {}
    for entry in entries or []:
        name, sep, value = str(entry).partition("=")
        if not sep or not name:
            raise ConfigError(f"{what} takes NAME=VALUE, got {entry!r}")
        if name in pairs:
            raise ConfigError(f"{what} {name} is given twice; each name once")
        pairs[name] = value
    return pairs


def cache_dir() -> Path:
    """``$BATCAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/batcat``, else ``~/.cache/batcat``."""
    if os.environ.get("BATCAT_CACHE_DIR"):
        return Path(os.environ["BATCAT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "batcat"


def _coerce(text: str, hint: Any, where: str) -> Any:
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    kind = kinds[0]
    try:
        if kind is bool:
            return text.lower() in ("1", "true", "yes", "on")
        if kind in (int, float):
            return kind(text)
        if typing.get_origin(kind) in (list, tuple):
            return [part.strip() for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{where}={text!r} is not a valid {kind.__name__}") from None
    return text


def _pyproject_section(section: str) -> dict[str, Any]:
    table = _tool_batcat(project_dir())
    for part in filter(None, section.split(".")):
        table = table.get(part, {})
    return table


@lru_cache(maxsize=8)
def _tool_batcat(project: Path) -> dict[str, Any]:
    path = project / "pyproject.toml"
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return data.get("tool", {}).get("batcat", {})
