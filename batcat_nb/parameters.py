"""Turn papermill-style parameter flags into values and check them against the notebook."""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import ParameterError, did_you_mean
from .notebook import Notebook, Parameter

log = logging.getLogger("batcat_nb")


def resolve_value(text: str) -> Any:
    """papermill's ``-p`` typing: True/False/None, then int, then float, else the string."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def collect(
    *,
    files: Iterable[str | Path] = (),
    yaml_texts: Iterable[str] = (),
    values: Iterable[tuple[str, str]] = (),
    raw: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Merge parameter flags in papermill's order: ``-f`` < ``-y`` < ``-p`` < ``-r``."""
    merged: dict[str, Any] = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise ParameterError(f"parameters file not found: {path} (-f takes a YAML file)")
        merged.update(_yaml_mapping(path.read_text(), f"parameters file {path}"))
    for text in yaml_texts:
        merged.update(_yaml_mapping(text, f"-y {text!r}"))
    for name, value in values:
        merged[name] = resolve_value(value)
    for name, value in raw:
        merged[name] = value
    return merged


def effective_parameters(
    notebook: Notebook, given: Mapping[str, Any], *, allow_unknown: bool = False
) -> dict[str, Any]:
    """Check ``given`` against the notebook's declared parameters.

    Returns every declared default (as written) overlaid with the given values, which is what
    the notebook runs with and what the MLflow run records.
    """
    declared = notebook.parameters()
    if declared is None:
        if given:
            log.warning(
                "%s has no cell tagged 'parameters': the values are injected at the top, as "
                "papermill does. Tag the cell that sets the defaults to have them checked.",
                notebook.path,
            )
        return dict(given)
    by_name = {p.name: p for p in declared}
    for name, value in given.items():
        parameter = by_name.get(name)
        if parameter is None:
            _unknown(notebook, name, by_name, allow_unknown)
        elif not parameter.accepts(value):
            raise ParameterError(_type_mismatch(parameter, value))
    return with_defaults(notebook, given)


def check_names(notebook: Notebook, names: Iterable[str], *, allow_unknown: bool = False) -> None:
    """Refuse names the notebook does not declare (values given elsewhere, e.g. secrets)."""
    declared = notebook.parameters()
    if declared is None:
        return
    by_name = {p.name: p for p in declared}
    for name in names:
        if name not in by_name:
            _unknown(notebook, name, by_name, allow_unknown)


def with_defaults(notebook: Notebook, given: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook's declared defaults (as written) overlaid with the given values."""
    effective: dict[str, Any] = {p.name: _DefaultText(p.default) for p in notebook.parameters() or []}
    effective.update(given)
    return effective


class _DefaultText(str):
    """A default as written in the parameters cell (not injected; recorded as text)."""


def is_default(value: Any) -> bool:
    """Whether ``value`` is a notebook default rather than a value the user gave."""
    return isinstance(value, _DefaultText)


def given_only(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The values to inject: effective parameters minus the notebook's own defaults."""
    return {k: v for k, v in parameters.items() if not is_default(v)}


def recorded(parameters: Mapping[str, Any]) -> dict[str, str]:
    """Parameters as MLflow records them: text, defaults evaluated where they are literals."""
    return {name: str(_evaluated(value)) for name, value in parameters.items()}


def _evaluated(value: Any) -> Any:
    if not is_default(value):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return str(value)


def _unknown(notebook: Notebook, name: str, declared: Mapping[str, Parameter], allow: bool) -> None:
    hint = did_you_mean(name, declared)
    names = ", ".join(declared) or "none"
    if allow:
        log.warning("%s declares no parameter %r%s; passing it anyway", notebook.path.name, name, hint)
        return
    raise ParameterError(
        f"{notebook.path.name} has no parameter '{name}'{hint}; declared: {names}. "
        "Pass --allow-unknown-parameters to inject it anyway."
    )


def _type_mismatch(parameter: Parameter, value: Any) -> str:
    got = "None" if value is None else type(value).__name__
    hint = f", or -r {parameter.name} VALUE for text" if parameter.type_name == "str" else ""
    return (
        f"parameter '{parameter.name}' expects {parameter.type_name} (default "
        f"{parameter.default}), got {value!r} ({got}); pass a {parameter.type_name} value{hint}"
    )


def _yaml_mapping(text: str, where: str) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParameterError(f"{where} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ParameterError(f"{where} must be a YAML mapping of name: value")
    return {str(k): v for k, v in loaded.items()}
