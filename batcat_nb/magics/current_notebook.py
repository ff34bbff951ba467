"""Which notebook this kernel serves, as its front end tells it: JupyterLab/Notebook or VS Code.

``current_notebook(shell)`` tries, in order:

1. ``__vsc_ipynb_file__`` in the user namespace (VS Code's Jupyter extension sets it);
2. ``JPY_SESSION_NAME`` in the kernel's environment (jupyter_server 2 and later: JupyterLab,
   Notebook 7, SageMaker Studio's JupyterLab) and ipykernel's copy of it, ``__session__``;
3. the Jupyter servers running on this machine, asked which session holds this kernel (older
   servers, and a notebook renamed since its kernel started).

Each candidate counts only when it names an existing ``.ipynb`` file: a console's session name
or a renamed notebook's stale path falls through to the next.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("batcat_nb")

VSCODE_VARIABLE = "__vsc_ipynb_file__"
SESSION_ENV = "JPY_SESSION_NAME"
SESSION_VARIABLE = "__session__"
_SERVER_TIMEOUT = 2.0


def current_notebook(
    shell: Any = None, environ: Mapping[str, str] | None = None, ask_servers: bool = True
) -> Path | None:
    """The path of the notebook this kernel runs, or None outside a notebook session."""
    for candidate in _candidates(shell, os.environ if environ is None else environ):
        path = existing_notebook(candidate)
        if path is not None:
            return path
    return notebook_from_servers() if ask_servers else None


def _candidates(shell: Any, environ: Mapping[str, str]) -> Iterator[str]:
    user_ns = getattr(shell, "user_ns", None) or {}
    for value in (user_ns.get(VSCODE_VARIABLE), environ.get(SESSION_ENV), user_ns.get(SESSION_VARIABLE)):
        if isinstance(value, str) and value:
            yield value


def existing_notebook(candidate: str, cwd: Path | None = None) -> Path | None:
    """``candidate`` as an existing notebook file; a relative name is tried from the kernel's cwd."""
    if candidate.startswith("file://"):
        candidate = urllib.request.url2pathname(candidate.removeprefix("file://"))
    path = Path(candidate).expanduser()
    if path.suffix != ".ipynb":
        return None
    here = cwd or Path.cwd()
    # Older servers name the session by its path relative to the server root; the kernel's
    # working directory is the notebook's own, so its bare name is tried there too.
    for option in (path,) if path.is_absolute() else (here / path, here / path.name):
        if option.is_file():
            return option.resolve()
    return None


def notebook_from_servers(kernel_id: str | None = None, runtime_dir: Path | None = None) -> Path | None:
    """Ask each Jupyter server on this machine which session holds this kernel."""
    kernel_id = kernel_id or _kernel_id()
    if not kernel_id:
        return None
    if runtime_dir is None:
        from jupyter_core.paths import jupyter_runtime_dir

        runtime_dir = Path(jupyter_runtime_dir())
    for info_file in sorted(runtime_dir.glob("jpserver-*.json")) + sorted(
        runtime_dir.glob("nbserver-*.json")
    ):
        try:
            info = json.loads(info_file.read_text())
            sessions = _get_sessions(info)
        except (OSError, ValueError) as exc:
            log.debug("no sessions from %s: %s", info_file.name, exc)
            continue
        for session in sessions:
            if (session.get("kernel") or {}).get("id") != kernel_id:
                continue
            relative = session.get("path") or (session.get("notebook") or {}).get("path", "")
            root = Path(info.get("root_dir") or info.get("notebook_dir") or ".")
            found = existing_notebook(str(root / relative))
            if found is not None:
                return found
    return None


def _get_sessions(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The server's ``/api/sessions``, always asked on the loopback address: the server is local."""
    if info.get("sock"):
        raise ValueError("unix-socket server")
    scheme = "https" if info.get("secure") else "http"
    base = str(info.get("base_url") or "/")
    url = f"{scheme}://127.0.0.1:{int(info['port'])}{base.rstrip('/')}/api/sessions"
    request = urllib.request.Request(url, headers={"Authorization": f"token {info.get('token', '')}"})
    with urllib.request.urlopen(request, timeout=_SERVER_TIMEOUT) as response:
        sessions = json.loads(response.read())
    return sessions if isinstance(sessions, list) else []


def _kernel_id() -> str | None:
    """This kernel's id, from its connection file name (``kernel-<id>.json``)."""
    try:
        from ipykernel.connect import get_connection_file

        name = Path(get_connection_file()).name
    except Exception:  # not an ipykernel, or one started without a connection file
        return None
    match = re.fullmatch(r"kernel-(.+)\.json", name)
    return match.group(1) if match else None
