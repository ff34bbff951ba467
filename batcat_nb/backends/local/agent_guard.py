"""Whom the agent serves and trusts: only its own user, as ssh-agent and OpenSSH do.

- Its directory must belong to the user and be closed to group and others (OpenSSH's check of
  ``~/.ssh``): a shared ``BATCAT_AGENT_DIR`` or ``XDG_CACHE_HOME`` is refused, not used.
- Each side checks the other's uid with ``SO_PEERCRED`` where the system offers it (Linux).
- A message is one JSON line of at most ``MAX_MESSAGE`` bytes; a peer that does not answer a
  ping or a connect within ``BATCAT_AGENT_TIMEOUT`` seconds (default 10) is given up on.
- A pid is signalled only if it is this user's agent for that socket (its command line says so).
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
from pathlib import Path

from ...errors import BatcatError, UsageError

MAX_MESSAGE = 64 * 1024 * 1024  # a manifest with every metric point of a long training fits
TIMEOUT_ENV = "BATCAT_AGENT_TIMEOUT"
_AGENT_MODULE = b"batcat_nb.backends.local.agent"


def timeout() -> float:
    """Seconds to wait for a connect or a ping."""
    return float(os.environ.get(TIMEOUT_ENV) or 10.0)


def check_private(directory: Path, variable: str) -> None:
    """Refuse, naming the fix, a directory other users own or may enter."""
    info = directory.stat()
    if info.st_uid != os.getuid():
        raise UsageError(
            f"the agent directory {directory} belongs to uid {info.st_uid}, not to you "
            f"(uid {os.getuid()}); set {variable} to a folder of your own"
        )
    mode = info.st_mode & 0o777
    if mode & 0o077:
        raise UsageError(
            f"the agent directory {directory} is open to other users (mode {mode:03o}); "
            f"run chmod 700 {directory}"
        )


def peer(connection: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end, or None where the system cannot tell."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    pid, uid, _gid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, option, 12))
    return pid, uid


def trusted(connection: socket.socket) -> bool:
    """Whether the peer is this user (or root, who could read the directory anyway)."""
    found = peer(connection)
    return found is None or found[1] in (os.getuid(), 0)


def read_message(stream: io.BufferedIOBase, what: str) -> bytes:
    """One line of at most MAX_MESSAGE bytes; b"" at the end of the stream."""
    line = stream.readline(MAX_MESSAGE + 1)
    if len(line) > MAX_MESSAGE:
        raise BatcatError(f"{what} is larger than {MAX_MESSAGE} bytes: refused")
    return line


def is_agent(pid: int, path: Path) -> bool:
    """Whether ``pid`` is this user's agent serving ``path`` (so that it may be signalled)."""
    proc = Path(f"/proc/{pid}")
    try:
        if proc.is_dir():
            owner, command = proc.stat().st_uid, (proc / "cmdline").read_bytes()
        else:  # no /proc (macOS): ask ps
            shown = subprocess.run(
                ["ps", "-o", "uid=", "-o", "args=", "-p", str(pid)], capture_output=True, check=True
            ).stdout.strip()
            uid, _, command = shown.partition(b" ")
            owner = int(uid)
    except (OSError, ValueError, subprocess.CalledProcessError):
        return False
    return owner == os.getuid() and _AGENT_MODULE in command and os.fsencode(path) in command
