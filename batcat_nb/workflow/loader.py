"""Read a workflow file and check all of it before anything runs or is deployed.

Every problem is one line naming the file and the place in it::

    workflows/daily.yaml: steps.train.needs: no step 'reprot' (did you mean 'report'?)
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from ..backends import option_keys
from ..errors import NotebookError, ParameterError, WorkflowError, did_you_mean
from ..layout import RESERVED_CHANNELS
from ..notebook import Notebook, load_notebook
from ..parameters import effective_parameters
from ..storage import is_s3
from .model import Source, Step, StepOutput, Workflow

TOP_KEYS = ("name", "parameters", "schedule", "on_s3", "notify", "steps")
STEP_KEYS = ("notebook", "needs", "inputs", "outputs", "parameters", "include", "retries")
MAX_NAME = 40  # leaves room for the timestamp and suffix of a SageMaker job name (63)
_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")  # a SageMaker job name's alphabet
_CHANNEL = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]*")
_REFERENCE = re.compile(r"([a-zA-Z0-9-]+)\.([a-zA-Z0-9_-]+)")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SNS_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[a-zA-Z0-9_-]{1,256}(\.fifo)?")
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
# EventBridge Scheduler's cron fields: minutes hours day-of-month month day-of-week year
_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
_DAYS = "SUN|MON|TUE|WED|THU|FRI|SAT"
_CRON_FIELDS = (
    ("minutes", r"\d{1,2}", ""),
    ("hours", r"\d{1,2}", ""),
    ("day-of-month", r"\d{1,2}W?|L|LW", "?"),
    ("month", rf"\d{{1,2}}|{_MONTHS}", ""),
    ("day-of-week", rf"[1-7](#[1-5])?|[1-7]?L|{_DAYS}", "?"),
    ("year", r"\d{4}", ""),
)


def load_workflow(path: str | Path) -> Workflow:
    """The workflow in ``path``, checked completely; WorkflowError names the first problem."""
    return _Loader(Path(path)).load()


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.resolve().parent
        self.notebooks: dict[str, Notebook] = {}

    def fail(self, place: str, problem: str) -> WorkflowError:
        return WorkflowError(f"{self.path}: {place}: {problem}" if place else f"{self.path}: {problem}")

    def load(self) -> Workflow:
        data, raw = self._read()
        self._known_keys(data, TOP_KEYS, "")
        name = data.get("name", re.sub(r"[^a-zA-Z0-9]+", "-", self.path.stem).strip("-"))
        self._check_name(name, "name")
        steps_data = data.get("steps")
        if not isinstance(steps_data, dict) or not steps_data:
            raise self.fail("steps", "give at least one step: 'steps: {NAME: {notebook: PATH}}'")
        steps = {str(n): self._step(str(n), s) for n, s in steps_data.items()}
        self._resolve_references(steps)
        self._check_cycles(steps)
        workflow = Workflow(
            name=name,
            path=self.path.resolve(),
            steps=steps,
            parameters=self._mapping(data.get("parameters"), "parameters"),
            schedule=self._schedule(data.get("schedule")),
            on_s3=self._on_s3(data.get("on_s3")),
            notify=self._notify(data.get("notify")),
            sha256=hashlib.sha256(raw).hexdigest(),
        )
        for parameter, value in workflow.parameters.items():
            check_workflow_parameter(workflow, parameter, value, f"{self.path}: parameters.{parameter}")
        return workflow

    def _read(self) -> tuple[dict[str, Any], bytes]:
        import yaml

        if not self.path.is_file():
            raise WorkflowError(f"workflow file not found: {self.path} (relative to {Path.cwd()})")
        raw = self.path.read_bytes()
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "YAML"
            raise self.fail(where, f"not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
        if not isinstance(data, dict):
            raise self.fail(
                "", "a workflow file is a YAML mapping with 'steps:' (and 'name:', 'parameters:', ...)"
            )
        return data, raw

    def _known_keys(self, data: dict[str, Any], known: tuple[str, ...], place: str) -> None:
        for key in data:
            if key not in known:
                where = f"{place}.{key}" if place else str(key)
                raise self.fail(
                    where, f"unknown key{did_you_mean(str(key), known)}; known: {', '.join(known)}"
                )

    def _check_name(self, name: Any, place: str) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME:
            raise self.fail(
                place,
                f"{name!r} is not a valid name: letters, digits and inner hyphens, "
                f"at most {MAX_NAME} characters (it becomes part of SageMaker job names)",
            )

    def _mapping(self, value: Any, place: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(place, f"expected a mapping of names to values, got {value!r}")
        return {str(k): v for k, v in value.items()}

    def _file(self, value: Any, place: str, what: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.fail(place, f"expected the path of a {what}, got {value!r}")
        path = (self.base / value).resolve()
        if not path.exists():
            raise self.fail(place, f"{value}: no such {what} (paths are relative to {self.base})")
        return path

    def _step(self, name: str, data: Any) -> Step:
        place = f"steps.{name}"
        self._check_name(name, place)
        if not isinstance(data, dict):
            raise self.fail(place, "expected a mapping with at least 'notebook: PATH'")
        options = option_keys()
        known = STEP_KEYS + tuple(o for o in options if o not in STEP_KEYS)
        self._known_keys(data, known, place)
        if "notebook" not in data:
            raise self.fail(place, "no 'notebook: PATH'")
        notebook_path = self._file(data["notebook"], f"{place}.notebook", "notebook")
        try:
            notebook = load_notebook(notebook_path)
        except NotebookError as exc:
            raise self.fail(f"{place}.notebook", str(exc)) from None
        self.notebooks[name] = notebook
        include = data.get("include") or []
        if not isinstance(include, list):
            include = [include]
        step = Step(
            name=name,
            notebook=notebook_path,
            needs=self._needs(data.get("needs"), f"{place}.needs"),
            inputs=self._inputs(data.get("inputs"), f"{place}.inputs"),
            outputs=self._outputs(data.get("outputs"), f"{place}.outputs"),
            parameters=self._mapping(data.get("parameters"), f"{place}.parameters"),
            include=[self._file(p, f"{place}.include", "file or directory") for p in include],
            options={options[k]: v for k, v in data.items() if k in options and k != "include"},
            retries=self._retries(data.get("retries", 0), f"{place}.retries"),
            declared=[p.name for p in notebook.parameters() or []],
        )
        both = sorted(set(step.inputs) & set(step.outputs))
        if both:
            raise self.fail(
                f"{place}.outputs.{both[0]}", "is an input of the step too; name them differently"
            )
        for parameter, value in step.parameters.items():
            self._check_parameter(notebook, parameter, value, f"{place}.parameters.{parameter}")
        return step

    def _needs(self, value: Any, place: str) -> list[str]:
        needs = [value] if isinstance(value, str) else value or []
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise self.fail(place, f"expected a list of step names, got {value!r}")
        return list(dict.fromkeys(needs))

    def _channels(self, value: Any, place: str) -> dict[str, Any]:
        channels = self._mapping(value, place)
        for name in channels:
            if not _CHANNEL.fullmatch(name) or name in RESERVED_CHANNELS:
                raise self.fail(
                    f"{place}.{name}",
                    "not a valid channel name: letters, digits, '_' and '-', and not one batcat "
                    f"uses itself ({', '.join(sorted(RESERVED_CHANNELS))})",
                )
        return channels

    def _inputs(self, value: Any, place: str) -> dict[str, Source]:
        inputs: dict[str, Source] = {}
        for name, source in self._channels(value, place).items():
            if not isinstance(source, str) or not source:
                raise self.fail(
                    f"{place}.{name}", f"expected a path, an s3:// URI or STEP.OUTPUT, got {source!r}"
                )
            reference = _REFERENCE.fullmatch(source)
            if is_s3(source):
                inputs[name] = source
            elif reference and not (self.base / source).exists():
                inputs[name] = StepOutput(reference.group(1), reference.group(2))
            else:
                inputs[name] = str(self._file(source, f"{place}.{name}", "file or directory"))
        return inputs

    def _outputs(self, value: Any, place: str) -> dict[str, str | None]:
        if isinstance(value, list):
            value = dict.fromkeys(value)
        outputs: dict[str, str | None] = {}
        for name, target in self._channels(value, place).items():
            if target is not None and (not isinstance(target, str) or not target):
                raise self.fail(
                    f"{place}.{name}", f"expected a path, an s3:// URI or nothing, got {target!r}"
                )
            outputs[name] = target if target is None or is_s3(target) else str((self.base / target).resolve())
        return outputs

    def _retries(self, value: Any, place: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(place, f"expected a whole number >= 0, got {value!r}")
        return value

    def _check_parameter(self, notebook: Notebook, name: str, value: Any, place: str) -> None:
        if notebook.parameters() is None:
            raise self.fail(
                place,
                f"{notebook.path.name} has no cell tagged 'parameters'; tag the cell that sets its defaults",
            )
        try:
            effective_parameters(notebook, {name: value})
        except ParameterError as exc:
            message = str(exc).split(". Pass --allow-unknown-parameters")[0]
            raise self.fail(place, message) from None

    def _resolve_references(self, steps: dict[str, Step]) -> None:
        for step in steps.values():
            for need in step.needs:
                if need not in steps:
                    raise self.fail(f"steps.{step.name}.needs", _no_step(need, steps))
            for channel, source in step.inputs.items():
                if not isinstance(source, StepOutput):
                    continue
                place = f"steps.{step.name}.inputs.{channel}"
                producer = steps.get(source.step)
                if producer is None:
                    raise self.fail(place, f"{_no_step(source.step, steps)}; nor is '{source}' a file here")
                if source.channel not in producer.outputs:
                    outputs = ", ".join(producer.outputs) or "none"
                    raise self.fail(
                        place,
                        f"step '{source.step}' has no output '{source.channel}'"
                        f"{did_you_mean(source.channel, producer.outputs)}; its outputs: {outputs}",
                    )
                if source.step == step.name:
                    raise self.fail(place, "a step cannot read its own output")
                if source.step not in step.needs:
                    step.needs.append(source.step)

    def _check_cycles(self, steps: dict[str, Step]) -> None:
        state: dict[str, int] = {}  # 1: on the path being walked, 2: done

        def walk(name: str, path: list[str]) -> None:
            state[name] = 1
            for need in steps[name].needs:
                if state.get(need) == 1:
                    cycle = path[path.index(need) :] + [need]
                    raise self.fail(
                        f"steps.{name}.needs", f"a cycle: {' -> '.join(cycle)} (each needs the next)"
                    )
                if need not in state:
                    walk(need, [*path, need])
            state[name] = 2

        for name in steps:
            if name not in state:
                walk(name, [name])

    def _schedule(self, value: Any) -> str | None:
        if value is None:
            return None
        problem = schedule_problem(value)
        if problem:
            raise self.fail("schedule", problem)
        return str(value)

    def _on_s3(self, value: Any) -> str | None:
        if value is None:
            return None
        bucket = str(value).removeprefix("s3://").split("/", 1)[0] if isinstance(value, str) else ""
        if not isinstance(value, str) or not value.startswith("s3://") or not _BUCKET.fullmatch(bucket):
            raise self.fail("on_s3", f"expected s3://BUCKET/PREFIX/, got {value!r}")
        return value

    def _notify(self, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _SNS_ARN.fullmatch(value):
            raise self.fail(
                "notify", f"expected an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC), got {value!r}"
            )
        return value


def check_workflow_parameter(workflow: Workflow, name: str, value: Any, where: str) -> None:
    """A workflow parameter (from the file or ``-p``) must be declared by some step's notebook,
    with a type each declaring notebook accepts."""
    declaring = [step for step in workflow.steps.values() if name in step.declared]
    if not declaring:
        declared = {p for step in workflow.steps.values() for p in step.declared}
        raise WorkflowError(
            f"{where}: no step's notebook declares it{did_you_mean(name, declared)}; "
            f"declared: {', '.join(sorted(declared)) or 'none'}"
        )
    for step in declaring:
        try:
            effective_parameters(load_notebook(step.notebook), {name: value})
        except ParameterError as exc:
            raise WorkflowError(f"{where}: step {step.name}: {exc}") from None


def schedule_problem(expression: Any) -> str:
    """What is wrong with an EventBridge Scheduler expression, or '' when it is valid."""
    hint = "use cron(MIN HOUR DAY MONTH WEEKDAY YEAR) or rate(N minutes|hours|days)"
    if not isinstance(expression, str):
        return f"expected a string, got {expression!r}; {hint}"
    if expression.startswith("rate("):
        rate = _RATE.fullmatch(expression)
        if not rate or int(rate.group(1)) < 1:
            return (
                f"{expression!r} is not a rate: write rate(N UNIT), N >= 1, UNIT minute(s), hour(s) or day(s)"
            )
        if (int(rate.group(1)) == 1) != (not rate.group(2).endswith("s")):
            return f"{expression!r}: write the unit singular for 1 (rate(1 hour)), plural otherwise"
        return ""
    if not (expression.startswith("cron(") and expression.endswith(")")):
        return f"{expression!r} is not a schedule; {hint}"
    fields = expression[5:-1].split()
    if len(fields) != 6:
        return f"{expression!r} has {len(fields)} fields, cron needs 6: MIN HOUR DAY MONTH WEEKDAY YEAR"
    for text, (name, value, extra) in zip(fields, _CRON_FIELDS, strict=True):
        item = rf"(\*|{value})(-({value}))?(/\d+)?"
        if not (text == extra or re.fullmatch(rf"{item}(,{item})*", text, re.IGNORECASE)):
            return f"{expression!r}: {text!r} is not a valid {name} field"
    if (fields[2] == "?") == (fields[4] == "?"):
        return f"{expression!r}: exactly one of day-of-month and day-of-week must be '?' (cron(0 3 * * ? *))"
    return ""


def _no_step(name: str, steps: dict[str, Step]) -> str:
    return f"no step '{name}'{did_you_mean(name, steps)}; steps: {', '.join(steps)}"
