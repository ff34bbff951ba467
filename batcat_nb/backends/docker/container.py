"""SageMaker Processing's container contract, run in a local container by the docker SDK.

``run_request`` executes a ``create_processing_job`` request (``batcat_nb.contract``) as strictly
as SageMaker does: the platform's folders (``/opt/ml/config``, each input and output channel,
``/opt/ml/output``) are copied into the container owned by root, mode 0755, before it starts, as
the platform creates them; the container runs the image's own USER, on the network the request
allows (``EnableNetworkIsolation``: none), with hostname ``algo-1``; a stop sends SIGINT, then
SIGKILL after a grace period. Nothing of the host is bind-mounted but what the caller adds
(a local tracking store). At the end the outputs are copied out of the container and extracted by
this process, so what reaches the host belongs to the host user: Continuous outputs whatever the
outcome, EndOfJob outputs only for a completed job (the platform documents nothing more).
The first KB of ``/opt/ml/output/message`` becomes the exit message.

It knows nothing of MLflow or of batcat's JobSpec: the Docker backend and the SageMaker test
fixture both call it with a plain request.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...contract import (
    COMPLETED,
    CONTAINER,
    FAILED,
    HOSTNAME,
    STOPPED,
    ProcessingOutcome,
    job_config,
    local_path,
)
from ...errors import BackendError, UsageError
from ...layout import MESSAGE_LIMIT, JobLayout
from ...storage import download, is_s3, output_files, upload

log = logging.getLogger("batcat_nb")

JOB_LABEL = "io.batcat.job"  # every container run_request starts carries it
STAGE_LABEL = "io.batcat.stage"  # the host folder of its /opt/ml: outputs to collect if we die
_LIVE: dict[str, Any] = {}  # container id -> client, for containers this process has not removed yet

Bind = tuple[str, str, bool]  # host path, container path, read-only


@dataclass
class ContainerResources:
    """Limits of the local container (``--cpus``, ``--memory``, ``--gpus``)."""

    cpus: float | None = None
    memory: str | None = None  # docker's syntax: 512m, 2g
    gpus: str | None = None  # "all" or a count

    def docker_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.cpus:
            kwargs["nano_cpus"] = int(self.cpus * 1e9)
        if self.memory:
            kwargs["mem_limit"] = self.memory
            kwargs["memswap_limit"] = self.memory  # no swap: over the limit is an OOM kill
        if self.gpus:
            from docker.types import DeviceRequest

            count = -1 if str(self.gpus) == "all" else int(self.gpus)
            kwargs["device_requests"] = [DeviceRequest(count=count, capabilities=[["gpu"]])]
        return kwargs


def docker_client(timeout: int = 60) -> Any:
    """A client of the Docker engine, or a one-line BackendError saying what to start or install."""
    try:
        import docker
    except ImportError:
        raise BackendError(
            "the Docker backend needs the docker SDK: pip install 'batcat_nb[docker]'"
        ) from None
    try:
        client = docker.from_env(timeout=timeout)  # type: ignore[attr-defined]
        client.ping()
    except Exception as exc:
        raise BackendError(_engine_problem(exc)) from None
    return client


def _engine_problem(exc: Exception) -> str:
    """One line: why the engine cannot be used and what to start or install."""
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    text = str(exc)
    if "Permission denied" in text or "PermissionError" in text:
        return (
            f"permission denied on the Docker engine at {where}; add your user to the docker group "
            "(sudo usermod -aG docker $USER, then log in again) or run as root"
        )
    if not os.environ.get("DOCKER_HOST") and not (shutil.which("dockerd") or shutil.which("docker")):
        return "Docker is not installed here; install it (sudo apt-get install docker.io) and start dockerd"
    missing = "No such file" in text or "FileNotFoundError" in text or "Connection refused" in text
    reason = "nothing is listening there" if missing else _first_line(exc)
    fix = "start it (sudo systemctl start docker, or sudo dockerd &)"
    if os.environ.get("DOCKER_HOST"):
        fix += " or unset DOCKER_HOST"
    return f"the Docker engine at {where} is not answering ({reason}); {fix}"


def run_request(
    request: Mapping[str, Any],
    *,
    client: Any = None,
    on_log: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    stop_grace: float = 10.0,
    extra_mounts: Mapping[str, str] | None = None,
    network_mode: str = "bridge",
    resources: ContainerResources | None = None,
    user: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    s3: Any = None,
    labels: Mapping[str, str] | None = None,
) -> ProcessingOutcome:
    """Run a ``create_processing_job`` request in a local container, as SageMaker would.

    ``extra_mounts`` (host dir -> container dir, read-write) and ``extra_env`` (variables the
    job's config does not record, e.g. credentials) are local additions; ``network_mode`` is the
    network of a job the request does not isolate; ``user`` overrides the image's USER; ``s3`` is
    the client that moves the channels (default: this process's credentials); ``labels`` are
    added to the container's. The container is always removed (``collect_orphans`` does it if
    this process dies).
    """
    client = client or docker_client()
    stop = stop or threading.Event()
    if stop.is_set():
        return ProcessingOutcome(-1, STOPPED, "stopped before the container started")
    stage = _Stage(request, s3)
    try:
        try:
            stage.prepare()
        except Exception as exc:  # an input SageMaker could not download either
            log.debug("cannot prepare %s", request["ProcessingJobName"], exc_info=True)
            return ProcessingOutcome(-1, FAILED, f"ClientError: {_first_line(exc)}")
        if (request.get("NetworkConfig") or {}).get("EnableNetworkIsolation"):
            network_mode = "none"
        binds = [(host, target, False) for host, target in (extra_mounts or {}).items()]
        labels = {**(labels or {}), STAGE_LABEL: str(stage.root)}
        container = _Container(client, request, binds, network_mode, resources, user, extra_env, labels)
        try:
            outcome = container.run(stage, on_log, stop, stop_grace)
            if container.container is not None:
                outcome.exit_message = container.read_message()
                if outcome.status == FAILED and not outcome.failure_reason:
                    detail = outcome.exit_message.strip().splitlines()[:1] or [
                        f"exit code {outcome.exit_code}"
                    ]
                    outcome.failure_reason = f"AlgorithmError: {detail[0]}"
                upload_error = stage.collect_outputs(
                    container.copy_out, completed=outcome.status == COMPLETED
                )
                if upload_error and outcome.status == COMPLETED:
                    outcome.status, outcome.failure_reason = FAILED, upload_error
        finally:
            container.remove()
        return outcome
    finally:
        stage.remove()


class _Stage:
    """The platform's side of ``/opt/ml``: config, downloaded inputs and empty output channels,
    packed as root-owned 0755 folders; the outputs, copied back out at the end."""

    def __init__(self, request: Mapping[str, Any], s3: Any = None, root: Path | None = None) -> None:
        self.request = request
        self.s3 = s3
        self.root = root or Path(tempfile.mkdtemp(prefix=f"batcat-{request['ProcessingJobName']}-"))  # 0700
        self.layout = JobLayout(self.root)
        self.archive = self.root / "platform.tar"

    def prepare(self) -> None:
        """Fetch the inputs and pack everything the platform puts in the container; keep the
        request beside it, from which ``collect_orphans`` collects a dead launcher's outputs."""
        (self.root / "request.json").write_text(json.dumps(self.request))
        count = self.request["ProcessingResources"]["ClusterConfig"].get("InstanceCount", 1)
        hosts = [f"algo-{i}" for i in range(1, count + 1)]
        with tarfile.open(self.archive, "w") as tar:
            _add_dir(tar, CONTAINER.config_dir)
            _add_file(tar, CONTAINER.config_dir / "processingjobconfig.json", job_config(self.request))
            _add_file(
                tar, CONTAINER.config_dir / "resourceconfig.json", {"current_host": HOSTNAME, "hosts": hosts}
            )
            _add_dir(tar, CONTAINER.message_file.parent)
            for item in self.request.get("ProcessingInputs", []):
                s3 = item["S3Input"]
                _add_tree(tar, self._fetch(item["InputName"], s3["S3Uri"]), s3["LocalPath"])
            for _name, _uri, local, _mode in self.outputs():
                _add_dir(tar, Path(local))

    def _fetch(self, name: str, uri: str) -> Path:
        if not is_s3(uri):
            source = local_path(uri)
            if not source.exists():
                raise UsageError(f"input '{name}': {source} does not exist")
            return source
        target = self.layout.input(name)
        target.mkdir(parents=True)
        download(uri, target, self.s3)
        if not any(target.iterdir()):
            raise UsageError(f"input '{name}': no objects under {uri}")
        return target

    def outputs(self) -> Iterator[tuple[str, str, str, str]]:
        for item in self.request.get("ProcessingOutputConfig", {}).get("Outputs", []):
            s3 = item["S3Output"]
            yield item["OutputName"], s3["S3Uri"], s3["LocalPath"], s3.get("S3UploadMode", "EndOfJob")

    def collect_outputs(self, copy_out: Callable[[str, Path], None], completed: bool) -> str | None:
        """Copy the outputs out and upload them: Continuous ones always, EndOfJob ones only for a
        completed job. The first problem, if any."""
        problem = None
        for name, uri, local, mode in self.outputs():
            if mode != "Continuous" and not completed:
                log.debug("output '%s' (EndOfJob) not uploaded: the job did not complete", name)
                continue
            source = self.layout.output(name)
            try:
                copy_out(local, source)
                if is_s3(uri):
                    upload(source, uri, self.s3)
                else:
                    _copy_output(source, local_path(uri))
            except Exception as exc:
                log.warning("output '%s': cannot copy to %s: %s", name, uri, exc)
                problem = problem or f"ClientError: output '{name}' could not be written to {uri}: {exc}"
        return problem

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _platform_owned(info: tarfile.TarInfo, mode: int) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = mode
    info.mtime = int(time.time())
    return info


def _add_dir(tar: tarfile.TarFile, path: Path) -> None:
    info = _platform_owned(tarfile.TarInfo(str(path).lstrip("/")), 0o755)
    info.type = tarfile.DIRTYPE
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, path: Path, content: Any) -> None:
    data = json.dumps(content, indent=2).encode()
    info = _platform_owned(tarfile.TarInfo(str(path).lstrip("/")), 0o644)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_tree(tar: tarfile.TarFile, source: Path, target: str) -> None:
    """``source`` (a file or a folder) at ``target``: folders 0755, files 0644, owned by root."""
    _add_dir(tar, Path(target))
    paths = [source] if source.is_file() else sorted(source.rglob("*"))
    for path in paths:
        relative = path.name if path == source else path.relative_to(source).as_posix()
        name = f"{target.lstrip('/')}/{relative}"
        if path.is_dir() and not path.is_symlink():
            _add_dir(tar, Path("/" + name))
        elif path.is_file():  # links are followed, as a download would; nothing else is copied
            with path.open("rb") as handle:
                info = _platform_owned(tar.gettarinfo(fileobj=handle, arcname=name), 0o644)
                info.type = tarfile.REGTYPE
                tar.addfile(info, handle)


def _copy_out(container: Any, path: str, destination: Path) -> None:
    """A stopped container's folder ``path`` into ``destination``."""
    stream, _ = container.get_archive(path)
    _extract(stream, destination)


def _extract(stream: Iterable[bytes], destination: Path) -> None:
    """A ``docker cp`` archive of one folder into ``destination``, as this process's user: the
    folder's own name stripped, nothing outside ``destination``, no devices, no owner kept."""
    with tempfile.TemporaryFile() as buffer:
        for chunk in stream:
            buffer.write(chunk)
        buffer.seek(0)
        destination.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=buffer) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/", 1)
                if len(parts) < 2 or not parts[1]:
                    continue
                member.name = parts[1]
                try:
                    safe = tarfile.data_filter(member, str(destination))
                except tarfile.FilterError as exc:
                    log.warning("not copied out of the container: %s", exc)
                    continue
                tar.extract(safe, destination, filter="fully_trusted")


def _copy_output(source: Path, destination: Path) -> None:
    """The output's files into ``destination``, paths kept; links out of the output are not followed."""
    for path in output_files(source):
        target = destination / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


class _Container:
    """One container of one job: created, filled, started, streamed, stopped when asked,
    emptied of its outputs, removed."""

    def __init__(
        self,
        client: Any,
        request: Mapping[str, Any],
        binds: list[Bind],
        network_mode: str,
        resources: ContainerResources | None,
        user: str | None,
        extra_env: Mapping[str, str] | None,
        labels: Mapping[str, str],
    ) -> None:
        self.client = client
        self.request = request
        app = request["AppSpecification"]
        environment = {**request.get("Environment", {}), **(extra_env or {})}
        if user and user.split(":")[0] != "0" and "HOME" not in environment:
            environment["HOME"] = "/tmp"  # a uid without a passwd entry has no writable home
        from docker.types import Mount

        kwargs: dict[str, Any] = dict(
            entrypoint=app.get("ContainerEntrypoint"),
            command=app.get("ContainerArguments"),
            environment=environment,
            hostname=HOSTNAME,
            network_mode=network_mode,
            mounts=[Mount(target, source, type="bind", read_only=ro) for source, target, ro in binds],
            labels={**labels, JOB_LABEL: request["ProcessingJobName"]},
            stop_signal="SIGINT",  # what Processing sends a stopped job, SIGKILL after the grace
            **(resources.docker_kwargs() if resources else {}),
        )
        if user:
            kwargs["user"] = user
        self.kwargs = kwargs
        self.container: Any = None

    def run(
        self,
        stage: _Stage,
        on_log: Callable[[str], None] | None,
        stop: threading.Event,
        stop_grace: float,
    ) -> ProcessingOutcome:
        import docker.errors

        image = self.request["AppSpecification"]["ImageUri"]
        try:
            self.container = self.client.containers.create(image, **self.kwargs)
            _watch(self.container.id, self.client)
            with stage.archive.open("rb") as archive:
                self.container.put_archive("/", archive)
            self.container.start()
        except docker.errors.ImageNotFound:
            return ProcessingOutcome(-1, FAILED, f"ClientError: image {image} not found")
        except docker.errors.APIError as exc:
            return ProcessingOutcome(-1, FAILED, f"ClientError: cannot start the container: {exc}")
        streamer = threading.Thread(target=self._stream, args=(on_log,), daemon=True)
        streamer.start()
        exit_code, stopped_by = self._wait(stop, stop_grace)
        streamer.join(timeout=10)
        self.container.reload()
        state = self.container.attrs.get("State", {})
        oom = bool(state.get("OOMKilled"))
        if stopped_by:
            return ProcessingOutcome(exit_code, STOPPED, stopped_by, oom_killed=oom)
        if exit_code == 0:
            return ProcessingOutcome(0, COMPLETED, oom_killed=oom)
        reason = None
        if oom:
            limit = self.kwargs.get("mem_limit")
            reason = f"OutOfMemory: the container used more than its memory limit ({limit or 'host'})"
        return ProcessingOutcome(exit_code, FAILED, reason, oom_killed=oom)

    def copy_out(self, path: str, destination: Path) -> None:
        """The container's folder ``path`` into ``destination`` (the container has exited)."""
        _copy_out(self.container, path, destination)

    def read_message(self) -> str:
        """The first KB of ``/opt/ml/output/message``, or ''."""
        try:
            stream, _ = self.container.get_archive(str(CONTAINER.message_file))
        except Exception:
            return ""
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member is not None else None
            raw = handle.read(MESSAGE_LIMIT) if handle is not None else b""
        return raw.decode(errors="ignore")

    def _wait(self, stop: threading.Event, grace: float) -> tuple[int, str | None]:
        """Block until the container exits; stop it when asked or past MaxRuntimeInSeconds."""
        result: dict[str, Any] = {}
        done = threading.Event()

        def wait() -> None:
            try:
                result.update(self.client.api.wait(self.container.id, timeout=None))
            except Exception as exc:  # the engine went away: report the job as failed
                result["error"] = exc
            finally:
                done.set()

        threading.Thread(target=wait, daemon=True).start()
        limit = self.request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
        deadline = time.monotonic() + limit if limit else None
        stopped_by = None
        while not done.wait(0.1):
            if stopped_by is None and stop.is_set():
                stopped_by = "stopped by request"
            elif stopped_by is None and deadline is not None and time.monotonic() > deadline:
                stopped_by = f"MaxRuntimeInSeconds ({limit}s) exceeded"
            else:
                continue
            self._stop(grace)
        if "error" in result:
            return -1, stopped_by or f"lost the container: {_first_line(result['error'])}"
        return int(result.get("StatusCode", -1)), stopped_by

    def _stop(self, grace: float) -> None:
        """SIGINT now, SIGKILL after ``grace`` seconds (``docker stop``), without blocking."""

        def stop() -> None:
            try:
                self.container.stop(timeout=max(1, round(grace)))
            except Exception as exc:
                log.debug("stopping %s: %s", self.container.id[:12], exc)

        threading.Thread(target=stop, daemon=True).start()

    def _stream(self, on_log: Callable[[str], None] | None) -> None:
        try:
            chunks = self.client.api.logs(self.container.id, stream=True, follow=True)
            for line in _lines(chunks):
                if on_log is not None:
                    try:
                        on_log(line)
                    except Exception as exc:
                        log.debug("log handler: %s", exc)
        except Exception as exc:
            log.debug("log stream of %s ended: %s", self.container.id[:12], exc)

    def remove(self) -> None:
        if self.container is None:
            return
        try:
            self.container.remove(force=True)
        except Exception as exc:
            log.warning("could not remove container %s: %s", self.container.id[:12], exc)
        _LIVE.pop(self.container.id, None)


def collect_orphans(client: Any, label: str, value: str) -> bool:
    """Containers labelled ``label=value`` whose launcher died: False while one still runs;
    else each one's outputs are collected from its stage, as ``run_request`` would, and it is
    removed with its stage."""
    found = client.containers.list(all=True, filters={"label": f"{label}={value}"})
    if any(c.status in ("created", "running", "restarting", "paused") for c in found):
        return False
    for container in found:
        stage_root = container.labels.get(STAGE_LABEL)
        if stage_root and (Path(stage_root) / "request.json").is_file():
            stage = _Stage(json.loads((Path(stage_root) / "request.json").read_text()), root=Path(stage_root))
            completed = container.attrs.get("State", {}).get("ExitCode") == 0
            stage.collect_outputs(functools.partial(_copy_out, container), completed)
            stage.remove()
        container.remove(force=True)
    return True


def _watch(container_id: str, client: Any) -> None:
    """Remember a container, so that it is removed even if this process exits mid-job."""
    if not _LIVE:
        atexit.register(_remove_live)
    _LIVE[container_id] = client


def _remove_live() -> None:
    for container_id, client in list(_LIVE.items()):
        try:
            client.api.remove_container(container_id, force=True)
        except Exception as exc:
            log.debug("removing %s at exit: %s", container_id[:12], exc)
    _LIVE.clear()


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Whole lines out of a byte stream cut anywhere."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
