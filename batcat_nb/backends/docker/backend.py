"""The Docker backend: the runner image's worker in a local container, as SageMaker Processing runs it.

``submit`` stages the job and finds (or builds) the image before the MLflow run exists; once it
does, the container starts with the run's ids in its environment. The container contract
itself lives in ``container.py`` (the request in ``batcat_nb.contract``), shared with the SageMaker tests.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import lease
from ...config import parse_pairs, resolve
from ...contract import (
    LOCAL_ROLE,
    PLATFORM,
    ProcessingOutcome,
    build_request,
    check_channels,
    check_environment,
    check_request,
    code_files,
    file_uri,
    include_paths,
    instance_resources,
    on_loopback,
    request_tags,
    stage_files,
)
from ...errors import BackendError, ConfigError
from ...layout import CODE_CHANNEL, JOB_CHANNEL, NOTEBOOK_CHANNEL
from ...manifest import FAILED, FINISHED, RUNNING, Manifest
from ...privileges import RUN_AS_ENV
from ...secrets import launcher_env
from ...spec import JobSpec
from ...storage import aws_credentials, is_s3
from ...tracking import TAG_IMAGE, TAG_IMAGE_DIGEST, Tracker, run_env
from ..base import JobHandle, RerunImage
from .container import ContainerResources, docker_client

log = logging.getLogger("batcat_nb")

# Container labels: what `batcat runs reconcile` needs to find, collect and remove a container
# whose launcher died (credentials in the tracking URI are not kept).
OUTPUT_LABEL, RUN_LABEL, TRACKING_LABEL = "io.batcat.output", "io.batcat.run_id", "io.batcat.tracking"

_MEMORY = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)


@dataclass
class DockerConfig:
    """``[tool.batcat.docker]``, ``BATCAT_DOCKER_*`` and the run's ``backend_options``."""

    image: str | None = None  # run this existing image; nothing is built
    base_image: str | None = None  # default: python:3.11-slim, else batcat-base:bookworm
    requirements: str | None = None  # default: requirements.txt beside the notebook or in the project
    wheelhouse: bool | None = None  # None: only when the build cannot reach a package index
    cpus: float | None = None
    memory: str | None = None  # docker's syntax: 512m, 2g
    gpus: str | None = None  # "all" or a count
    env: list[str] | dict[str, str] | None = None  # NAME=VALUE entries for the container
    include: list[str] | None = None  # files or directories shipped beside the notebook
    pass_aws_credentials: bool = False
    role: str | None = None  # the request's RoleArn; with as_role, the role the data moves as
    as_role: bool = False  # S3 channels move with STS AssumeRole credentials of ``role``
    instance_type: str | None = None  # the request's; also the container's vCPUs and memory
    network: str | None = None  # default: bridge, or host when tracking is on this machine's loopback
    network_isolation: bool = False  # the request's EnableNetworkIsolation: no network at all
    user: str | None = None  # default ("image"): the image's USER, as on SageMaker; or UID:GID
    stop_grace: float = 10.0  # seconds between SIGINT and SIGKILL

    def environment(self) -> dict[str, str]:
        return parse_pairs(self.env, "--env")

    def container_user(self) -> str | None:
        return None if self.user in (None, "image") else self.user

    def resources(self) -> ContainerResources:
        """--cpus and --memory, else the instance type's (vCPUs capped at this machine's)."""
        cpus, memory = self.cpus, self.memory
        if self.instance_type:
            vcpus, gib = instance_resources(self.instance_type)
            available = os.cpu_count() or 1
            if cpus is None and vcpus > available:
                log.warning(
                    "%s has %d vCPUs; this machine has %d: the container gets %d",
                    self.instance_type,
                    vcpus,
                    available,
                    available,
                )
            cpus = cpus if cpus is not None else min(vcpus, available)
            memory = memory or f"{int(gib * 1024)}m"
        return ContainerResources(cpus=cpus, memory=memory, gpus=self.gpus)

    def includes(self) -> list[Path]:
        return include_paths(self.include or [])


def docker_config(options: dict[str, Any]) -> DockerConfig:
    """The Docker options of a run, checked."""
    config = resolve(DockerConfig, "docker", options)
    if config.memory and not _MEMORY.match(str(config.memory)):
        raise ConfigError(f"docker memory {config.memory!r} is not a size like 512m or 2g")
    if config.cpus is not None and float(config.cpus) <= 0:
        raise ConfigError(f"docker cpus must be positive, got {config.cpus}")
    if config.gpus and not (str(config.gpus) == "all" or str(config.gpus).isdigit()):
        raise ConfigError(f"docker gpus {config.gpus!r}: give 'all' or a count")
    if config.network_isolation and config.network not in (None, "none"):
        raise ConfigError(f"--network {config.network} contradicts --network-isolation (no network at all)")
    if config.instance_type:
        instance_resources(config.instance_type)
    if config.as_role and not config.role:
        raise ConfigError("--as-role needs the role to assume: --role arn:aws:iam::ACCOUNT_ID:role/NAME")
    config.environment()
    config.includes()
    return config


class DockerBackend:
    """Runs each job in a fresh container of the runner image, through the local Docker engine."""

    name = "docker"
    leased = True  # as a local job; collect_orphan gathers a container whose launcher died

    def __init__(self) -> None:
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def validate(self, spec: JobSpec) -> None:
        config = docker_config(spec.backend_options)
        check_channels(spec.inputs, spec.outputs)
        check_environment(config.environment())
        client = self.client()
        if config.gpus and "nvidia" not in (client.info().get("Runtimes") or {}):
            raise BackendError(
                "--gpus needs the NVIDIA Container Toolkit in the Docker engine (no 'nvidia' runtime here)"
            )
        if config.pass_aws_credentials:
            aws_credentials()
        draft = run_env(spec.tracking_uri, "0" * 32, "0" * 19)
        check_request(
            docker_request(
                spec, config, "batcat-runner:draft", Path("/draft"), {**draft, **config.environment()}
            )
        )

    def submit(self, spec: JobSpec) -> DockerHandle:
        return DockerHandle(spec, docker_config(spec.backend_options), self.client())

    def rerun_image(self, request: RerunImage) -> tuple[dict[str, Any], dict[str, str]]:
        """For ``batcat rerun``: the image a run ran in, by digest; rebuilt when it is gone and its
        inputs are unchanged, or built from the run's environment (``rebuild.py``)."""
        from .rebuild import rerun_image

        return rerun_image(self.client(), request)

    def collect_orphan(self, output_dir: str) -> bool:
        """For ``batcat runs reconcile``: False while the job's container runs; else its outputs
        are collected into ``output_dir`` and the container removed."""
        from .container import collect_orphans

        return collect_orphans(self.client(), OUTPUT_LABEL, output_dir)

    def tracker(self, uri: str) -> Tracker:
        """MLflow through the warm agent, as for local runs: the launcher never imports MLflow."""
        from ..local import agent

        return agent.tracker(uri)


def warn_if_not_for_sagemaker(image: Any) -> None:
    """A local run of an image SageMaker could not run (its instances are all x86) says so."""
    if image.architecture != "amd64":
        log.warning(
            "image %s is built for %s; SageMaker runs %s only: `batcat build` builds for it",
            image.tag,
            image.architecture,
            PLATFORM,
        )


def docker_request(
    spec: JobSpec, config: DockerConfig, image: str, job_dir: Path, environment: dict[str, str]
) -> dict[str, Any]:
    """The CreateProcessingJob request a Docker run executes: the one SageMaker would be sent,
    with the staged code and job channels and the local channels as ``file://`` URIs."""
    inputs = {name: file_uri(job_dir / name) for name in (CODE_CHANNEL, JOB_CHANNEL)}
    inputs.update({k: v if is_s3(v) else file_uri(v) for k, v in spec.inputs.items()})
    outputs = {NOTEBOOK_CHANNEL: file_uri(spec.output_dir)}
    outputs.update({k: v if is_s3(v) else file_uri(v) for k, v in spec.outputs.items()})
    return build_request(
        spec,
        image=image,
        inputs=inputs,
        outputs=outputs,
        environment=environment,
        instance_type=config.instance_type or "ml.m5.large",  # named; limits only when asked
        role_arn=config.role or LOCAL_ROLE,
        max_runtime=int(spec.timeout) + 60 if spec.timeout else None,
        tags=request_tags(spec),
        network_isolation=config.network_isolation,
    )


class DockerHandle(JobHandle):
    """A job in a container: staged and imaged at submit, started once its MLflow run exists."""

    def __init__(self, spec: JobSpec, config: DockerConfig, client: Any) -> None:
        super().__init__(spec)
        from . import image as images

        self.config, self.client = config, client
        self.output_dir = Path(spec.output_dir)
        if config.image:
            self.image = images.existing_image(client, config.image)
        else:
            requirements = config.requirements or images.find_requirements(Path(spec.notebook).parent)
            self.image = images.ensure_image(
                client,
                base_image=config.base_image,
                requirements=requirements,
                wheelhouse=config.wheelhouse,
                on_log=self._show_step if spec.progress or spec.log_output else None,
            )
        warn_if_not_for_sagemaker(self.image)
        # The run is created after submit, with the spec's tags: the image is part of its provenance.
        spec.tags.update({TAG_IMAGE: self.image.tag, TAG_IMAGE_DIGEST: self.image.digest})
        if self.image.inputs:  # what `batcat rerun` rebuilds it from, should it be gone
            spec.tags[images.TAG_IMAGE_INPUTS] = json.dumps(self.image.inputs)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._lease = lease.hold(self.output_dir)  # `batcat runs reconcile` leaves the run to us
        # The code channel holds what SageMaker's would: the notebook and the --include'd files.
        # Private (0700): the parameters in job.json are for this user and the container alone.
        self.job_dir = Path(tempfile.mkdtemp(prefix=f"batcat-{spec.job_name}-job-"))
        stage_files(code_files(Path(spec.notebook), config.includes()), self.job_dir / CODE_CHANNEL)
        (self.job_dir / JOB_CHANNEL).mkdir()
        (self.job_dir / JOB_CHANNEL / "job.json").write_text(json.dumps(spec.worker_job(), indent=2))
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()  # not Thread.join: a join broken by Ctrl-C can lie after
        self._outcome: ProcessingOutcome | None = None
        self._error = ""

    def _on_attach(self) -> None:
        environment, mounts = self._tracking()
        environment.update(self.config.environment())
        secrets = aws_credentials() if self.config.pass_aws_credentials else {}
        secrets.update(launcher_env(self.spec.secrets))  # the container's, not its config's
        if mounts:  # a local SQLite store is the host user's: the job writes it as that user
            secrets[RUN_AS_ENV] = f"{os.getuid()}:{os.getgid()}"
        request = self._request(environment)
        s3 = self._role_s3() if self.config.as_role else None
        self._thread = threading.Thread(
            target=self._run, args=(request, mounts, secrets, s3), name=f"docker-{self.job_name}", daemon=True
        )
        self._thread.start()

    def _request(self, environment: dict[str, str]) -> dict[str, Any]:
        request = docker_request(self.spec, self.config, self.image.tag, self.job_dir, environment)
        check_request(request)  # run ids and image known now: the request as it runs
        return request

    def _tracking(self) -> tuple[dict[str, str], dict[str, str]]:
        """The run's variables for the container, and the one mount a local store needs: its folder
        (the database, its journal, ``mlartifacts/``), at the same path so the same URI works."""
        assert self.tracker is not None and self.spec.run_id and self.spec.experiment_id
        uri = self.tracker.uri
        mounts: dict[str, str] = {}
        if uri.startswith("sqlite:///"):
            database = Path(uri.removeprefix("sqlite:///")).resolve()
            uri = f"sqlite:///{database}"
            folder = database.parent
            others = sorted(
                p.name
                for p in folder.iterdir()
                if not p.name.startswith(database.name) and p.name != "mlartifacts"
            )
            if others:
                log.warning(
                    "the job sees all of %s, where the SQLite store lives beside %s; keep the store "
                    "in a folder of its own",
                    folder,
                    ", ".join(others[:5]),
                )
            mounts[str(folder)] = str(folder)
        return run_env(uri, self.spec.run_id, self.spec.experiment_id), mounts

    def _network(self) -> str:
        """Docker's bridge, as a SageMaker job has a network of its own; the host's only when asked
        or when the job must reach a tracking server on this machine's loopback."""
        if self.config.network_isolation:
            return "none"
        if self.config.network:
            return self.config.network
        uri = self.spec.tracking_uri
        if uri.startswith(("http://", "https://")) and on_loopback(uri):
            log.info(
                "%s uses the host's network: its tracking server is on this machine's loopback", self.job_name
            )
            return "host"
        return "bridge"

    def _role_s3(self) -> Any:
        """An S3 client acting as the request's role; the run fails when the role cannot be assumed."""
        from ...storage import role_s3_client

        assert self.tracker is not None and self.spec.run_id and self.config.role
        try:
            return role_s3_client(self.config.role)
        except Exception as exc:
            error = BackendError(f"--as-role: cannot assume {self.config.role}: {type(exc).__name__}: {exc}")
            self.tracker.fail_run(self.spec.run_id, FAILED, str(error))
            raise error from None

    def _run(
        self, request: dict[str, Any], mounts: dict[str, str], secrets: dict[str, str], s3: Any = None
    ) -> None:
        from .container import run_request

        echo = self.spec.progress or self.spec.log_output
        try:
            with self.log_path.open("a", encoding="utf-8") as log_file:

                def on_log(line: str) -> None:
                    log_file.write(line + "\n")
                    log_file.flush()
                    if echo:
                        self._echo(line.rsplit("\r", 1)[-1])

                self._outcome = run_request(
                    request,
                    client=self.client,
                    on_log=on_log,
                    stop=self._stop_event,
                    stop_grace=self.config.stop_grace,
                    extra_mounts=mounts,
                    network_mode=self._network(),
                    resources=self.config.resources(),
                    user=self.config.container_user(),
                    extra_env=secrets,
                    s3=s3,
                    labels=self._labels(),
                )
        except Exception as exc:  # the engine failed us: the run ends FAILED with this reason
            log.debug("docker job %s", self.job_name, exc_info=True)
            self._error = f"the Docker engine failed the job: {type(exc).__name__}: {exc}"
        finally:
            shutil.rmtree(self.job_dir, ignore_errors=True)
            self._done.set()

    def _labels(self) -> dict[str, str]:
        from urllib.parse import urlsplit, urlunsplit

        assert self.tracker is not None
        uri, parts = self.tracker.uri, urlsplit(self.tracker.uri)
        if parts.username or parts.password:
            uri = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        return {OUTPUT_LABEL: str(self.output_dir), RUN_LABEL: self.spec.run_id or "", TRACKING_LABEL: uri}

    def status(self) -> str:
        if self._thread is not None and not self._done.is_set():
            return RUNNING
        return self.wait().status

    def _wait_for_exit(self, timeout: float | None) -> bool:
        if self._thread is None:
            return True  # never started: it ends without a manifest
        return self._done.wait(timeout)

    def _fetch_outputs(self) -> Path:
        shutil.rmtree(self.job_dir, ignore_errors=True)
        return self.output_dir

    def _read_manifest(self, output_dir: Path | None) -> Manifest:
        manifest = super()._read_manifest(output_dir)
        if self._outcome is not None and self._outcome.oom_killed and manifest.status != FINISHED:
            limit = f" (--memory {self.config.memory})" if self.config.memory else ""
            reason = manifest.reason
            detail = f"; {reason}" if reason and "OutOfMemory" not in reason else ""
            manifest.reason = f"killed: out of memory{limit}{detail}"
        return manifest

    def _exit_reason(self) -> str:
        if self._outcome is not None:
            return self._outcome.exit_message or self._outcome.failure_reason or ""
        return self._error

    def _stop(self) -> None:
        self._stop_event.set()
        if self._thread is None:
            shutil.rmtree(self.job_dir, ignore_errors=True)

    @staticmethod
    def _echo(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    @classmethod
    def _show_step(cls, line: str) -> None:
        from .image import is_step

        if is_step(line):
            cls._echo(line[:120])
