"""A workflow as the rest of batcat sees it: steps (notebooks), what each needs, where data flows.

Built only by ``workflow.loader.load_workflow``, which checks everything first: a Workflow in
memory is always valid (no cycles, every reference resolves, every parameter declared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StepOutput:
    """An input that is another step's output channel (``report.output`` in the file)."""

    step: str
    channel: str

    def __str__(self) -> str:
        return f"{self.step}.{self.channel}"


Source = str | StepOutput  # an input channel: a URI or local path, or another step's output


@dataclass
class Step:
    """One notebook of the pipeline, with the options ``batcat run`` would take for it."""

    name: str
    notebook: Path  # absolute
    needs: list[str] = field(default_factory=list)  # every step it waits for (explicit + data)
    inputs: dict[str, Source] = field(default_factory=dict)
    outputs: dict[str, str | None] = field(default_factory=dict)  # None: under the run's prefix
    parameters: dict[str, Any] = field(default_factory=dict)  # the step's own, before workflow's
    include: list[Path] = field(default_factory=list)  # absolute
    options: dict[str, Any] = field(default_factory=dict)  # backend options (instance_type, ...)
    retries: int = 0  # infrastructure failures only
    declared: list[str] = field(default_factory=list)  # the parameters its notebook declares


@dataclass
class Workflow:
    """A pipeline file, loaded and checked."""

    name: str
    path: Path  # the YAML file, absolute
    steps: dict[str, Step]  # in the file's order
    parameters: dict[str, Any] = field(default_factory=dict)  # given to every step declaring them
    schedule: str | None = None  # EventBridge Scheduler: cron(...) or rate(...)
    on_s3: str | None = None  # s3://bucket/prefix/: run when an object is created under it
    notify: str | None = None  # SNS topic ARN for failed executions
    sha256: str = ""  # of the file's bytes: which version of the pipeline an execution ran

    def parameters_for(self, step: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """What ``step`` receives: the workflow's parameters (``overrides`` win) that its notebook
        declares, then the step's own, which win over both."""
        workflow = {**self.parameters, **(overrides or {})}
        own = self.steps[step]
        return {**{k: v for k, v in workflow.items() if k in own.declared}, **own.parameters}

    def levels(self) -> list[list[str]]:
        """Step names in dependency order: each level needs only the levels before it."""
        done: set[str] = set()
        levels: list[list[str]] = []
        while len(done) < len(self.steps):
            level = [n for n, s in self.steps.items() if n not in done and set(s.needs) <= done]
            if not level:  # the loader refuses cycles; this guards a hand-built Workflow
                raise ValueError(f"workflow {self.name}: steps {sorted(set(self.steps) - done)} form a cycle")
            levels.append(level)
            done.update(level)
        return levels
