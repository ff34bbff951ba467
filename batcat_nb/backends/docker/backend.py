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

from ...config import parse_pairs, resolve
from ...contract import (
    ProcessingOutcome,
    check_channels,
    check_environment,
    code_files,
    file_uri,
    include_paths,
    stage_files,
)
from ...errors import BackendError, ConfigError
from ...layout import CODE_CHANNEL, JOB_CHANNEL, NOTEBOOK_CHANNEL
from ...manifest import FINISHED, RUNNING, Manifest
from ...spec import JobSpec
from ...storage import aws_credentials, is_s3
from ...tracking import TAG_IMAGE, TAG_IMAGE_DIGEST, Tracker, run_env
from ..base import JobHandle
from .container import ContainerResources, docker_client

log = logging.getLogger("batcat_nb")

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
    network: str = "host"  # host: the job reaches servers on this machine (MLflow, S3 endpoints)
    user: str | None = None  # default: your uid:gid (bind mounts stay yours); "image": the image's USER
    stop_grace: float = 10.0  # seconds between SIGTERM and SIGKILL

    def environment(self) -> dict[str, str]:
        return parse_pairs(self.env, "--env")

    def container_user(self) -> str | None:
        if self.user == "image":
            return None
        return self.user or f"{os.getuid()}:{os.getgid()}"

    def resources(self) -> ContainerResources:
        return ContainerResources(cpus=self.cpus, memory=self.memory, gpus=self.gpus)

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
    config.environment()
    config.includes()
    return config


class DockerBackend:
    """Runs each job in a fresh container of the runner image, through the local Docker engine."""

    name = "docker"

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

    def submit(self, spec: JobSpec) -> DockerHandle:
        return DockerHandle(spec, docker_config(spec.backend_options), self.client())

    def tracker(self, uri: str) -> Tracker:
        """MLflow through the warm agent, as for local runs: the launcher never imports MLflow."""
        from ..local import agent

        return agent.AgentTracker(uri) if agent.enabled() else Tracker(uri)


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
        # The run is created after submit, with the spec's tags: the image is part of its provenance.
        spec.tags.update({TAG_IMAGE: self.image.tag, TAG_IMAGE_DIGEST: self.image.digest})
        self.output_dir.mkdir(parents=True, exist_ok=True)
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
        request = self._request(environment)
        self._thread = threading.Thread(
            target=self._run, args=(request, mounts, secrets), name=f"docker-{self.job_name}", daemon=True
        )
        self._thread.start()

    def _request(self, environment: dict[str, str]) -> dict[str, Any]:
        from ...contract import build_request

        spec = self.spec
        inputs = {name: file_uri(self.job_dir / name) for name in (CODE_CHANNEL, JOB_CHANNEL)}
        inputs.update({k: v if is_s3(v) else file_uri(v) for k, v in spec.inputs.items()})
        outputs = {NOTEBOOK_CHANNEL: file_uri(self.output_dir)}
        outputs.update({k: v if is_s3(v) else file_uri(v) for k, v in spec.outputs.items()})
        return build_request(
            spec,
            image=self.image.tag,
            inputs=inputs,
            outputs=outputs,
            environment=environment,
            max_runtime=int(spec.timeout) + 60 if spec.timeout else None,
        )

    def _tracking(self) -> tuple[dict[str, str], dict[str, str]]:
        """The run's variables for the container, and the mounts a local store needs."""
        assert self.tracker is not None and self.spec.run_id and self.spec.experiment_id
        uri = self.tracker.uri
        mounts: dict[str, str] = {}
        if uri.startswith("sqlite:///"):  # the same file at the same path, so the same URI works
            database = Path(uri.removeprefix("sqlite:///")).resolve()
            uri = f"sqlite:///{database}"
            mounts[str(database.parent)] = str(database.parent)  # mlartifacts/ lives there too
        return run_env(uri, self.spec.run_id, self.spec.experiment_id), mounts

    def _run(self, request: dict[str, Any], mounts: dict[str, str], secrets: dict[str, str]) -> None:
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
                    network_mode=self.config.network,
                    resources=self.config.resources(),
                    user=self.config.container_user(),
                    extra_env=secrets,
                )
        except Exception as exc:  # the engine failed us: the run ends FAILED with this reason
            log.debug("docker job %s", self.job_name, exc_info=True)
            self._error = f"the Docker engine failed the job: {type(exc).__name__}: {exc}"
        finally:
            shutil.rmtree(self.job_dir, ignore_errors=True)
            self._done.set()

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
