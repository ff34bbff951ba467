"""Secret parameters (``--secret NAME[=SOURCE]``): the value reaches the kernel, and nothing else.

A secret travels by reference and is never written. The run, ``job.json``, the manifest and
the request record ``NAME -> SOURCE`` only:

- ``env:VAR`` (the default, ``env:NAME``): read by the launcher from its own environment and
  handed to the worker as ``BATCAT_SECRET_<NAME>`` beside the MLflow run's ids (local: the
  worker's stdin, or the agent's socket and its worker's stdin; Docker: the container's
  environment, not its ``processingjobconfig.json``). SageMaker refuses ``env:``: the job's
  environment is part of its description.
- ``ssm:/path`` and ``secretsmanager:ID`` (SageMaker): read by the worker inside the job, with
  the job's own role; the launcher never sees the value.

In the job the worker puts the value into the kernel's environment (the silent preamble) and
the injected-parameters cell reads it from there: the notebook shows
``NAME = __import__("os").environ.pop("BATCAT_SECRET_NAME")``, not the value. Every output
that prints the value is masked before it reaches the notebook, its HTML or the log.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BatcatError, UsageError
from .layout import JobLayout
from .redact import Masker

ENV_PREFIX = "BATCAT_SECRET_"
SOURCES = ("env", "ssm", "secretsmanager")
LOCAL_SOURCES = ("env",)  # what a backend accepts unless it says otherwise (``secret_sources``)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SecretError(BatcatError):
    """A secret the job could not read (missing variable, parameter or permission)."""


def parse(entries: Iterable[str]) -> dict[str, str]:
    """``--secret`` values (``NAME`` or ``NAME=SOURCE``) to ``{NAME: SOURCE}``, checked."""
    found: dict[str, str] = {}
    for entry in entries:
        name, _, source = entry.partition("=")
        found[name.strip()] = source.strip()
    return normalise(found)


def normalise(secrets: Mapping[str, str | None]) -> dict[str, str]:
    """Sources made explicit (``env:NAME`` when none is given), each checked."""
    normalised: dict[str, str] = {}
    for name, source in secrets.items():
        if not _NAME.fullmatch(name):
            raise UsageError(f"--secret {name!r}: a secret is named like a parameter (letters, digits, _)")
        source = source or f"env:{name}"
        kind, _, reference = source.partition(":")
        if kind not in SOURCES or not reference:
            raise UsageError(
                f"--secret {name}={source}: the source is env:VARIABLE, ssm:/PARAMETER or "
                "secretsmanager:SECRET_ID"
            )
        if kind == "env" and not _NAME.fullmatch(reference):
            raise UsageError(f"--secret {name}={source}: {reference!r} is not an environment variable name")
        normalised[name] = source
    return normalised


def check_sources(secrets: Mapping[str, str], allowed: Collection[str], backend: str) -> None:
    """Refuse a source this backend cannot read without writing the value somewhere."""
    for name, source in secrets.items():
        kind = source.partition(":")[0]
        if kind in allowed:
            continue
        if kind == "env":
            raise UsageError(
                f"--secret {name}={source}: a {backend} job cannot receive a value from this "
                "machine without it landing in the job's description; store it in SSM "
                f"(--secret {name}=ssm:/PATH) or Secrets Manager (--secret {name}=secretsmanager:ID), "
                "which the job reads with its role"
            )
        raise UsageError(
            f"--secret {name}={source}: {kind}: is read inside SageMaker jobs only; here pass "
            f"--secret {name}=env:VARIABLE"
        )


def launcher_env(secrets: Mapping[str, str]) -> dict[str, str]:
    """The values of ``env:`` secrets, as the job's process receives them (never written)."""
    env: dict[str, str] = {}
    for name, source in secrets.items():
        kind, _, variable = source.partition(":")
        if kind != "env":
            continue
        value = os.environ.get(variable)
        if not value:
            raise UsageError(
                f"--secret {name}={source}: ${variable} is not set here; export it (or name "
                f"another variable: --secret {name}=env:VARIABLE)"
            )
        env[ENV_PREFIX + name] = value
    return env


def recorded(secrets: Mapping[str, str]) -> dict[str, str]:
    """What the run records for each secret parameter: its source, never its value."""
    return {name: f"<secret {source}>" for name, source in secrets.items()}


@dataclass
class JobSecrets:
    """The secrets of one job, as the worker resolved them."""

    env: dict[str, str] = field(default_factory=dict)  # for the kernel's environment
    parameters: dict[str, Any] = field(default_factory=dict)  # for papermill: expressions
    masker: Masker = field(default_factory=Masker)


def for_job(secrets: Mapping[str, str], env: Mapping[str, str]) -> JobSecrets:
    """Resolve a job's secrets inside the job: ``env:`` from ``env`` (or this process's
    environment), ``ssm:`` and ``secretsmanager:`` with the job's own AWS credentials."""
    if not secrets:
        return JobSecrets()
    _register_translator()
    values: dict[str, str] = {}
    for name, source in secrets.items():
        kind, _, reference = source.partition(":")
        variable = ENV_PREFIX + name
        if kind == "env":
            value = env.get(variable) or os.environ.get(variable)
            if value is None:
                raise SecretError(f"secret '{name}' ({source}) did not reach the job")
        else:
            value = _fetch(name, kind, reference)
        values[variable] = value
    return JobSecrets(
        env=values,
        parameters={name: SecretParameter(source, ENV_PREFIX + name) for name, source in secrets.items()},
        masker=Masker(values.values()),
    )


def job_region() -> str | None:
    """The job's region: the environment's, else its ARN's in ``processingjobconfig.json``."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    try:
        config = json.loads((JobLayout.current().config_dir / "processingjobconfig.json").read_text())
        return str(config["ProcessingJobArn"]).split(":")[3] or None
    except (OSError, ValueError, KeyError, IndexError):
        return None


def _fetch(name: str, kind: str, reference: str) -> str:
    """A parameter of SSM (decrypted) or a secret of Secrets Manager, read with the job's role."""
    import boto3

    region = job_region()
    try:
        if kind == "ssm":
            answer = boto3.client("ssm", region_name=region).get_parameter(
                Name=reference, WithDecryption=True
            )
            return str(answer["Parameter"]["Value"])
        answer = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=reference)
        return str(answer.get("SecretString") or answer["SecretBinary"].decode())
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SecretError(
            f"secret '{name}': cannot read {kind}:{reference} with the job's role ({detail}); "
            f"check that it exists and that the role may read it"
        ) from None


class SecretParameter(str):
    """A secret as papermill injects it: an expression reading the kernel's environment.

    As a string it is the reference (papermill records it in the notebook's metadata); the
    Python translator registered here writes the expression instead of the string.
    """

    source: str
    variable: str

    def __new__(cls, source: str, variable: str) -> SecretParameter:
        parameter = super().__new__(cls, f"<secret {source}>")
        parameter.source, parameter.variable = source, variable
        return parameter

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]  # papermill copies it
        return self.source, self.variable

    def expression(self) -> str:
        return f"__import__('os').environ.pop({self.variable!r})"


@functools.cache
def _register_translator() -> None:
    """papermill's Python translator, plus: a SecretParameter becomes its expression."""
    from papermill.translators import PythonTranslator, papermill_translators

    class SecretAwareTranslator(PythonTranslator):
        @classmethod
        def translate(cls, val: Any) -> str:
            if isinstance(val, SecretParameter):
                return val.expression()
            return str(super().translate(val))

    papermill_translators.register("python", SecretAwareTranslator)
