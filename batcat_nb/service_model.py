"""Requests checked against botocore's own service model: what AWS would refuse, refused here first.

Both the SageMaker backend (before ``CreateProcessingJob``) and the Docker backend (before its
container starts) check their request here, so a job that passes locally is not refused by AWS.
botocore is imported when a request is checked, never at import.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from .errors import BackendError, UsageError, did_you_mean


def validate_request(service: str, operation: str, params: Mapping[str, Any]) -> None:
    """Raise a UsageError listing every way ``params`` break the operation's input shape.

    botocore's own ParamValidator checks required members, types and minimums; this adds the
    maximums, patterns and enums the model declares, which botocore leaves to the service.
    """
    try:
        from botocore.validate import ParamValidator
    except ImportError:
        raise BackendError("checking a request needs botocore: pip install 'batcat_nb[docker]'") from None

    shape = _operation_model(service, operation).input_shape
    problems: list[str] = []
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        lines = (line.strip() for line in report.generate_report().splitlines())
        problems += [line for line in lines if line and not line.startswith("Parameter validation failed")]
    else:  # types are right: the constraints can be walked safely
        _check_shape(params, shape, "", problems)
    if problems:
        shown = "; ".join(dict.fromkeys(problems))
        raise UsageError(f"{operation} request refused before sending: {shown}")


@functools.lru_cache(maxsize=64)
def _operation_model(service: str, operation: str) -> Any:
    return _service_model(service).operation_model(operation)


@functools.lru_cache(maxsize=16)
def _service_model(service: str) -> Any:
    """Loaded once per service: a botocore session reads its JSON models from disk each time."""
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def _check_shape(value: Any, shape: Any, where: str, problems: list[str]) -> None:
    meta = shape.metadata
    label = where or "request"
    kind = shape.type_name
    if kind == "structure":
        for name, member in shape.members.items():
            if name in value:
                _check_shape(value[name], member, f"{where}.{name}" if where else name, problems)
    elif kind == "list":
        _check_size(len(value), meta, label, "items", problems)
        for index, item in enumerate(value):
            _check_shape(item, shape.member, f"{label}[{index}]", problems)
    elif kind == "map":
        _check_size(len(value), meta, label, "entries", problems)
        for key, item in value.items():
            _check_shape(key, shape.key, f"{label} key {key!r}", problems)
            _check_shape(item, shape.value, f"{label}[{key!r}]", problems)
    elif kind == "string":
        _check_size(len(value), meta, label, "characters", problems)
        pattern = meta.get("pattern")
        if pattern and not _pattern(pattern).fullmatch(value):
            problems.append(f"{label}={_short(value)} does not match {pattern}")
        if shape.enum and value not in shape.enum:
            problems.append(
                f"{label}={value!r} is not one of the allowed values{did_you_mean(value, shape.enum)}"
            )
    elif kind in ("integer", "long"):
        if "min" in meta and value < meta["min"]:
            problems.append(f"{label}={value} is below the minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            problems.append(f"{label}={value} is above the maximum {meta['max']}")


def _check_size(size: int, meta: Mapping[str, Any], label: str, unit: str, problems: list[str]) -> None:
    if "max" in meta and size > meta["max"]:
        problems.append(f"{label} has {size} {unit}, at most {meta['max']} allowed")


@functools.lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    """AWS patterns are Java regexes; map the Unicode classes Python's ``re`` lacks."""
    translated = (
        pattern.replace(r"\p{L}", r"\w")
        .replace(r"\p{N}", r"\d")
        .replace(r"\p{Z}", r"\s")
        .replace(r"\p{M}", r"\w")
    )
    try:
        return re.compile(translated, re.DOTALL)
    except re.error:
        return re.compile(r".*", re.DOTALL)


def _short(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")
