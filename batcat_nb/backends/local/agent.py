"""The batcat agent: a warm process that keeps MLflow loaded and the next kernel started.

A cold ``batcat run`` spends seconds importing MLflow, opening the store, importing papermill
and starting a kernel before the first cell runs. The first run starts an agent for its
environment (Python, batcat_nb's code, the MLFLOW_/AWS_/JUPYTER/PYTHON variables); later runs
hand it their tracking calls and their job over a Unix socket. Every job still gets a fresh
kernel with the caller's environment and directory. The agent exits after 10 idle minutes
(``BATCAT_AGENT_IDLE`` seconds); ``BATCAT_AGENT=0`` runs everything in the caller instead.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..._version import PACKAGE_DIR, __version__
from ...config import cache_dir
from ...errors import BatcatError, TrackingError
from ...manifest import Manifest
from ...reconcile import reconcile_store
from ...tracking import Tracker
from . import agent_guard as guard

log = logging.getLogger("batcat_nb")

AGENT_ENV = "BATCAT_AGENT"
AGENT_DIR_ENV = "BATCAT_AGENT_DIR"
IDLE_ENV = "BATCAT_AGENT_IDLE"
DEFAULT_IDLE_SECONDS = 600.0
START_TIMEOUT_SECONDS = 120.0
# Variables that shape what a job or the tracking client sees at start-up: a change means
# another agent, never a stale one.
_KEY_PREFIXES = ("MLFLOW_", "AWS_", "JUPYTER", "PYTHON", "LD_", "VIRTUAL_ENV", "CONDA", "IPYTHON")


def enabled() -> bool:
    return os.environ.get(AGENT_ENV, "1").lower() not in ("0", "off", "false", "no")


def agent_dir() -> Path:
    directory = Path(os.environ.get(AGENT_DIR_ENV) or cache_dir() / "agents")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    guard.check_private(directory, AGENT_DIR_ENV)
    return directory


def socket_path() -> Path:
    """The socket of the agent for this Python and these variables (``<environment>-<code>``)."""
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(_KEY_PREFIXES))
    environment = json.dumps([sys.executable, env])
    code = json.dumps([__version__, max(p.stat().st_mtime_ns for p in PACKAGE_DIR.rglob("*.py"))])
    return agent_dir() / f"{_digest(environment)}-{_digest(code)}.sock"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- client -------------------------------------------------------------------------------


def call(op: str, **payload: Any) -> dict[str, Any]:
    """One request to this environment's agent, started if it is not running."""
    path = socket_path()
    if path not in _answering:  # once per process: a socket that never answers must not hang us
        _ping(path)
        _answering.add(path)
    for _ in range(2 if op in _SAFE_TO_REPEAT or payload.get("method") in _REMOTE_READS else 1):
        try:
            with _connect(path) or _start(path) as connection:
                line = _request(connection, {"op": op, **payload}, None, path)  # a job takes its time
        except OSError:  # reached an agent as it handed over: the next one answers
            line = b""
        if line:
            break
    if not line:
        raise BatcatError(f"the batcat agent ended during '{op}' (log: {path.with_suffix('.log')})")
    reply: dict[str, Any] = json.loads(line)
    if "error" in reply:
        if reply.get("kind") == "TrackingError":
            raise TrackingError(reply["error"])
        raise BatcatError(f"the batcat agent failed: {reply['error']} (set {AGENT_ENV}=0 to bypass it)")
    return reply


_answering: set[Path] = set()  # agents that answered a ping from this process


def _ping(path: Path) -> None:
    """Ask the agent at ``path`` (started if need be) to answer within the timeout; a ping
    that meets an agent handing over is repeated once, with the agent that follows it."""
    for attempt in range(2):
        try:
            with _connect(path) or _start(path) as connection:
                _request(connection, {"op": "ping"}, guard.timeout(), path)
            return
        except OSError:
            if attempt:
                raise


def _connect(path: Path) -> socket.socket | None:
    """A connection to the agent at ``path``; None if nothing listens there."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(guard.timeout())
    try:
        connection.connect(str(path))
    except OSError:
        connection.close()
        return None
    if not guard.trusted(connection):
        connection.close()
        raise BatcatError(f"{path} is served by another user's process: refused; delete that socket")
    return connection


def _request(connection: socket.socket, request: dict[str, Any], wait: float | None, path: Path) -> bytes:
    """Send one request; its reply line (b"" if the agent closed without one)."""
    connection.settimeout(wait)
    try:
        with connection.makefile("rwb") as stream:
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            return guard.read_message(stream, f"the reply of the agent at {path}")
    except TimeoutError:
        raise BatcatError(
            f"the batcat agent at {path} did not answer within {wait:g}s; "
            f"delete that socket (or run `batcat agent stop`), or set {AGENT_ENV}=0"
        ) from None


def _start(path: Path) -> socket.socket:
    environment = path.stem.split("-")[0]
    _stop([(p, i) for p, i in running_agents() if p.stem.split("-")[0] == environment])  # older code
    with open(path.with_suffix(".log"), "ab") as log_file:
        subprocess.Popen(
            [sys.executable, "-m", "batcat_nb.backends.local.agent", "--socket", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=path.parent,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        connection = _connect(path)
        if connection is not None:
            return connection
        time.sleep(0.05)
    raise BatcatError(f"the batcat agent did not start (log: {path.with_suffix('.log')}); set {AGENT_ENV}=0")


# Requests that may be sent again when an agent ended before answering (nothing done twice).
_SAFE_TO_REPEAT = frozenset({"ping", "complete_run", "reconcile", "stop_job"})
_REMOTE_READS = frozenset({"experiment_id", "find_run", "finished_children"})

# Tracker methods the agent runs for its clients (their arguments and results are JSON).
_REMOTE_METHODS = frozenset(
    {
        "experiment_id",
        "start_run",
        "fail_run",
        "find_run",
        "finished_children",
        "reopen_run",
        "run_tags",
        "retry_run",
        "end_run",
    }
)


class AgentTracker(Tracker):
    """A Tracker whose calls run in the agent, where MLflow is already loaded."""

    def _remote(self, method: str, **kwargs: Any) -> Any:
        return call("tracker", uri=self.uri, method=method, kwargs=kwargs)["result"]

    def experiment_id(self, name: str) -> str:
        return str(self._remote("experiment_id", name=name))

    def start_run(self, **kwargs: Any) -> tuple[str, str]:
        run_id, experiment_id = self._remote("start_run", **kwargs)
        return run_id, experiment_id

    def fail_run(self, run_id: str, status: str, reason: str) -> None:
        self._remote("fail_run", run_id=run_id, status=status, reason=reason)

    def find_run(self, experiment_id: str, tag: str, value: str) -> str | None:
        found = self._remote("find_run", experiment_id=experiment_id, tag=tag, value=value)
        return str(found) if found else None

    def finished_children(self, experiment_id: str, parent_id: str, key_tag: str) -> list[str]:
        return list(
            self._remote(
                "finished_children", experiment_id=experiment_id, parent_id=parent_id, key_tag=key_tag
            )
        )

    def reopen_run(self, run_id: str) -> None:
        self._remote("reopen_run", run_id=run_id)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self._remote("run_tags", run_id=run_id))

    def retry_run(self, run_id: str, attempt: int, reason: str) -> None:
        self._remote("retry_run", run_id=run_id, attempt=attempt, reason=reason)

    def end_run(self, run_id: str, status: str, tags: Any, metrics: Any) -> None:
        self._remote("end_run", run_id=run_id, status=status, tags=dict(tags), metrics=dict(metrics))

    def reconcile(self) -> None:
        call("reconcile", uri=self.uri)

    def complete_run(self, run_id: str, manifest: Manifest, output_dir: Path | None) -> None:
        call(
            "complete_run",
            uri=self.uri,
            run_id=run_id,
            manifest=manifest.to_dict(),
            output_dir=str(output_dir) if output_dir else None,
        )


def tracker(uri: str) -> Tracker:
    """MLflow through the warm agent when agents are on (the launcher never imports MLflow)."""
    return AgentTracker(uri) if enabled() else Tracker(uri)


class AgentJob:
    """A local job run by the agent's warm worker; same interface as the local backend's."""

    def __init__(self, root: Path, parallel: int = 1) -> None:
        self.root = root
        self.parallel = parallel
        self.exit_code: int | None = None
        self._done = threading.Event()
        self._error: BaseException | None = None

    def start(self, env: dict[str, str]) -> None:
        full_env = {**os.environ, **env}
        threading.Thread(target=self._run, args=(full_env,), daemon=True).start()

    def _run(self, env: dict[str, str]) -> None:
        try:
            reply = call("run_job", root=str(self.root), env=env, parallel=self.parallel)
            self.exit_code = reply["exit"]
        except BaseException as exc:  # the handle reports a job without a manifest
            self._error = exc
        finally:
            self._done.set()

    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def lost(self) -> bool:
        """The agent ended before answering: the job itself may still be running."""
        return self._done.is_set() and self._error is not None

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)

    def stop(self) -> None:
        with contextlib.suppress(BatcatError, OSError):
            call("stop_job", root=str(self.root))


# --- server -------------------------------------------------------------------------------


class _Agent:
    """What the agent keeps warm, and the requests it answers."""

    def __init__(self, path: Path, idle: float) -> None:
        import mlflow.tracking  # noqa: F401  (the point of the agent: loaded once)

        from .pool import WorkerPool

        self.pool = WorkerPool(min(2, os.cpu_count() or 1), path.with_suffix(".workers.log"))
        self.trackers: dict[str, Tracker] = {}
        self.idle = idle
        self.last_seen = time.monotonic()
        self.busy = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._connections = 0
        self._drained = threading.Condition()

    @contextlib.contextmanager
    def in_flight(self) -> Any:
        """One connection, from its request to its reply; ``drain`` waits for them all."""
        with self._drained:
            self._connections += 1
        try:
            yield
        finally:
            with self._drained:
                self._connections -= 1
                self._drained.notify_all()

    def drain(self) -> None:
        with self._drained:
            self._drained.wait_for(lambda: self._connections == 0)

    def orphaned(self, request: dict[str, Any]) -> None:
        """A job whose client was killed has ended: complete its run from its manifest."""
        uri = request.get("env", {}).get("MLFLOW_TRACKING_URI") if request.get("op") == "run_job" else None
        if uri:
            try:
                reconcile_store(self.tracker(uri))
            except Exception:
                log.exception("completing the runs of %s", uri)

    def tracker(self, uri: str) -> Tracker:
        with self.lock:
            if uri not in self.trackers:
                self.trackers[uri] = Tracker(uri)
            return self.trackers[uri]

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "tracker" and request["method"] in _REMOTE_METHODS:
            method = getattr(self.tracker(request["uri"]), request["method"])
            return {"result": method(**request["kwargs"])}
        if op == "complete_run":
            output_dir = Path(request["output_dir"]) if request["output_dir"] else None
            manifest = Manifest.from_dict(request["manifest"])
            self.tracker(request["uri"]).complete_run(request["run_id"], manifest, output_dir)
            return {}
        if op == "run_job":
            self.pool.grow(request.get("parallel", 1))
            future = self.pool.dispatch(Path(request["root"]), request["env"], replace_env=True)
            return {"exit": future.result()}
        if op == "reconcile":
            reconcile_store(self.tracker(request["uri"]))
            return {}
        if op == "stop_job":
            self.pool.stop(Path(request["root"]))
            return {}
        if op == "ping":
            return {"pid": os.getpid(), "idle": self.idle_for()}
        raise ValueError(f"unknown request {op!r}")

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("op") == "ping":  # looking at an agent does not keep it alive
            return self.handle(request)
        with self.lock:
            self.busy += 1
        try:
            return self.handle(request)
        except TrackingError as exc:
            return {"error": str(exc), "kind": "TrackingError"}
        except Exception as exc:
            log.exception("request %s failed", request.get("op"))
            return {"error": f"{type(exc).__name__}: {exc}", "kind": "internal"}
        finally:
            with self.lock:
                self.busy -= 1
                self.last_seen = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            return 0.0 if self.busy else time.monotonic() - self.last_seen


def serve(path: Path, idle: float) -> None:
    """Answer requests on ``path`` until idle for ``idle`` seconds or told to stop (SIGTERM).

    Stopping hands over at once: the socket and the lock go first, so that the next client
    starts a new agent without waiting; the requests under way (jobs still running) are
    answered before this process exits.
    """
    lock = open(path.with_suffix(".lock"), "w")  # noqa: SIM115  (released at the hand-over)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return  # another agent for this environment is starting or running
    agent = _Agent(path, idle)
    path.unlink(missing_ok=True)

    class Handler(socketserver.StreamRequestHandler):
        timeout = guard.timeout()  # for reading a request; a job's reply may come much later

        def handle(self) -> None:
            if not guard.trusted(self.request):
                log.warning("refused another user's connection (pid, uid: %s)", guard.peer(self.request))
                return
            with agent.in_flight():
                try:
                    line = guard.read_message(self.rfile, "a request")
                except (BatcatError, TimeoutError) as exc:
                    log.warning("refused a request: %s", exc)
                    return
                if not line:
                    return
                request = json.loads(line)
                reply = agent.answer(request)
                try:
                    self.wfile.write(json.dumps(reply).encode() + b"\n")
                    self.wfile.flush()
                except OSError:  # the client is gone (killed): complete what it cannot
                    agent.orphaned(request)

    server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    threading.Thread(target=_watch_idle, args=(agent, server), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        path.unlink(missing_ok=True)
        server.server_close()
        lock.close()  # a new agent may start now
        agent.drain()
        agent.pool.close()


def _watch_idle(agent: _Agent, server: socketserver.BaseServer) -> None:
    while agent.idle_for() < agent.idle and not agent.stopping.is_set():
        agent.stopping.wait(min(1.0, agent.idle / 4))
    server.shutdown()


def running_agents() -> list[tuple[Path, dict[str, Any]]]:
    """The agents answering in the agent directory, with their ping replies."""
    found = []
    for path in sorted(agent_dir().glob("*.sock")):
        try:
            connection = _connect(path)
            if connection is None:
                continue
            with connection:
                server = guard.peer(connection)
                line = _request(connection, {"op": "ping"}, guard.timeout(), path)
        except BatcatError as exc:
            log.warning("%s", exc)
            continue
        info = json.loads(line) if line else None
        if info is not None and server is not None and info.get("pid") != server[0]:
            log.warning("%s answers as pid %s, served by pid %s: ignored", path, info.get("pid"), server[0])
        elif info is not None:
            found.append((path, info))
    return found


def stop_agents() -> int:
    """Ask every running agent to stop; return how many were asked."""
    return _stop(running_agents())


def _stop(agents: list[tuple[Path, dict[str, Any]]]) -> int:
    """SIGTERM to each of these that is this user's agent (a planted socket may name any pid)."""
    stopped = 0
    for path, info in agents:
        if not guard.is_agent(info["pid"], path):
            log.warning("not stopping pid %s: it is not your batcat agent for %s", info["pid"], path)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(info["pid"], signal.SIGTERM)
            stopped += 1
    return stopped


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m batcat_nb.backends.local.agent", description=__doc__)
    parser.add_argument("--socket", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    idle = float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_SECONDS))
    serve(args.socket, idle)


if __name__ == "__main__":
    main()
