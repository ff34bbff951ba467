"""Backends by name: built-ins first (imported only when chosen), then the entry-point group.

backends.get("local")        -> LocalBackend instance
BackendRegistry().register("mine", "pkg.module:Class")   (tests build their own registry)
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from ..errors import BackendError, did_you_mean

if TYPE_CHECKING:
    from .base import Backend

log = logging.getLogger("batcat_nb")

ENTRY_POINT_GROUP = "batcat_nb.backends"

BUILTIN = {
    "local": "batcat_nb.backends.local.backend:LocalBackend",
    "docker": "batcat_nb.backends.docker.backend:DockerBackend",
    "sagemaker": "batcat_nb.backends.sagemaker.backend:SageMakerBackend",
}

# Each built-in backend's command line (its ``SECTION``, ``RUN_OPTIONS`` and
# ``COMMANDS``); a backend without options of its own has none.
BACKEND_CLIS = {
    "docker": "batcat_nb.backends.docker.cli",
    "sagemaker": "batcat_nb.backends.sagemaker.cli",
}
CONTAINER_OPTIONS = ("image", "env", "include")  # the options every container backend takes


def option_keys(backend: str | None = None) -> dict[str, str]:
    """Every backend option of ``batcat run`` (its destination -> its config key, the same name):
    the containers' and each built-in backend's ``RUN_OPTIONS``; a workflow step takes the same.
    With ``backend``, only the options that backend takes (none for local or a backend without a cli)."""
    targets = [t for name, t in BACKEND_CLIS.items() if backend is None or name == backend]
    names = list(CONTAINER_OPTIONS) if targets else []
    for target in targets:
        names += [_dest(decls) for decls, _ in importlib.import_module(target).RUN_OPTIONS]
    return {name: name for name in names}


def _dest(decls: tuple[str, ...]) -> str:
    """Where click puts an option's value: its explicit name, else its flag in snake case."""
    return next((d for d in decls if not d.startswith("-")), decls[0].lstrip("-").replace("-", "_"))


class BackendRegistry:
    """Names to ``module:Class`` targets, loaded on first use."""

    def __init__(self, builtin: dict[str, str] | None = None) -> None:
        self._targets = dict(BUILTIN if builtin is None else builtin)

    def register(self, name: str, target: str) -> None:
        self._targets[name] = target

    def names(self) -> list[str]:
        names = set(self._targets)
        names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        return sorted(names)

    def get(self, name: str) -> Backend:
        target = self._targets.get(name)
        if target is None:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name == name:
                    target = ep.value
                    break
        if target is None:
            raise BackendError(
                f"unknown backend '{name}'{did_you_mean(name, self.names())}; "
                f"available: {', '.join(self.names())}"
            )
        module_name, _, class_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise BackendError(
                f"backend '{name}' cannot load ({exc}); install its extra: pip install 'batcat_nb[{name}]'"
            ) from None
        backend: Backend = getattr(module, class_name)()
        return backend


registry = BackendRegistry()
