"""Run a workflow from here over any backend: each step a job as ``batcat run`` makes it.

Steps start as soon as every step they need has finished, up to ``max_parallel`` at once. One
parent MLflow run per execution, one child run per step. A failed step stops only the steps
that need it. ``resume`` reopens the last execution and runs only the steps it did not finish;
a finished step's outputs stay where they are, so its dependents read them again.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import api, retry
from ..backends import option_keys, registry
from ..backends.base import JobHandle
from ..config import CoreConfig, resolve
from ..errors import BatcatError
from ..manifest import FAILED, FINISHED, KILLED
from ..progress import progress_bar
from ..result import INTERRUPTED, RunResult
from ..spec import JobSpec, RunRequest, job_name
from ..storage import check_input
from ..sweeps import TAG_PARENT, watch
from ..tracking import TAG_OUTPUT
from .loader import check_workflow_parameter
from .model import Step, StepOutput, Workflow

log = logging.getLogger("batcat_nb")

TAG_NAME = "batcat.workflow.name"  # the parent run's only: resuming finds the last by it
TAG_EXECUTION = "batcat.workflow.execution"
TAG_SHA = "batcat.workflow.sha256"
TAG_FILE = "batcat.workflow.file"
TAG_STEP = "batcat.workflow.step"
NOT_RUN = "NOT RUN"
REUSED = "finished in an earlier attempt of this execution"


@dataclass
class WorkflowRequest:
    """A loaded workflow and how to run it here."""

    workflow: Workflow
    parameters: dict[str, Any] = field(default_factory=dict)  # override the file's workflow ones
    backend: str | None = None
    max_parallel: int | None = None
    resume: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # RunRequest fields for every step


@dataclass
class StepResult:
    """One step of an execution: its run's result, or why it did not run."""

    step: str
    status: str  # FINISHED, FAILED, KILLED or NOT RUN
    run: RunResult | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == FINISHED


@dataclass
class WorkflowResult:
    """Every step's outcome, in the file's order."""

    name: str
    execution: str
    parent_run_id: str
    folder: str  # where the outputs without a URI went
    steps: list[StepResult]
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def interrupted(self) -> bool:
        return any(s.run is not None and s.run.interrupted for s in self.steps)

    def __getitem__(self, step: str) -> StepResult:
        return next(s for s in self.steps if s.step == step)

    def __str__(self) -> str:
        failed = sum(s.status in (FAILED, KILLED) for s in self.steps)
        skipped = sum(s.status == NOT_RUN for s in self.steps)
        head = (
            f"workflow {self.name} (execution {self.execution}): {len(self.steps)} "
            f"step{'s' if len(self.steps) != 1 else ''}, "
            f"{failed} failed, {skipped} not run, {self.duration:.1f}s (parent run {self.parent_run_id})"
        )
        rows = [("step", "status", "duration", "run", "reason")] + [
            (
                s.step,
                s.status,
                f"{s.run.duration:.1f}s" if s.run else "-",
                (s.run.run_id or "-") if s.run else "-",
                s.reason,
            )
            for s in self.steps
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            "  ".join([*(v.ljust(w) for v, w in zip(row[:4], widths, strict=True)), row[4]]).rstrip()
            for row in rows
        ]
        return "\n".join([head, *lines, f"outputs in {self.folder}"])


def run_workflow(request: WorkflowRequest) -> WorkflowResult:
    """Run the steps not yet finished; never stop the steps that do not need a failed one."""
    return _Execution(request).run()


class _Execution:
    def __init__(self, request: WorkflowRequest) -> None:
        self.workflow = workflow = request.workflow
        self.request = request
        for name, value in request.parameters.items():
            check_workflow_parameter(workflow, name, value, f"-p {name}")
            if all(name in s.parameters for s in workflow.steps.values() if name in s.declared):
                log.warning("-p %s changes nothing: every step declaring it sets its own value", name)
        self.base = RunRequest(notebook="", backend=request.backend, **request.options)
        self.base.experiment = self.base.experiment or workflow.name
        core = resolve(CoreConfig, "", {"backend": request.backend, "output_dir": self.base.output_dir})
        self.root = Path(core.output_dir).resolve()
        self.options = set(option_keys(core.backend).values())  # a step's others are for other backends
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        self.execution = f"{stamp}-{secrets.token_hex(2)}"  # a resumed execution keeps its own
        # Every step resolved and validated before anything starts, as ``batcat run`` would.
        checked = [self._spec(step, self.folder) for step in workflow.steps.values()]
        self.backend = registry.get(checked[0].backend)
        for spec in checked:
            self.backend.validate(spec)
        for step in workflow.steps.values():
            for channel, source in step.inputs.items():
                if not isinstance(source, StepOutput):
                    check_input(channel, source)
        self.tracker = api.tracker_for(self.backend, checked[0].tracking_uri)
        self._stop = threading.Event()

    def _spec(self, step: Step, folder: Path) -> JobSpec:
        """The step's job: its parameters, channels and options over the workflow's common ones."""
        options = {
            **self.base.backend_options,
            **{k: v for k, v in step.options.items() if k in self.options},
        }
        if step.include and "include" in self.options:
            options["include"] = [str(p) for p in step.include]
        request = replace(
            self.base,
            notebook=str(step.notebook),
            parameters=self.workflow.parameters_for(step.name, self.request.parameters),
            inputs={c: self._source(s, folder) for c, s in step.inputs.items()},
            outputs={c: self._target(step.name, c, folder) for c in step.outputs},
            output_dir=str(folder / step.name),
            progress=False,
            tags={**self.base.tags},
            backend_options=options,
            retries=step.retries or self.base.retries,  # the step's own, else --retries
        )
        spec = api.resolve_spec(request)
        name = job_name(step.name)  # the child run's name starts with the step's
        return replace(spec, job_name=name, output_dir=str(Path(spec.output_dir).with_name(name)))

    def _target(self, step: str, channel: str, folder: Path) -> str:
        return self.workflow.steps[step].outputs[channel] or str(folder / step / channel)

    def _source(self, source: str | StepOutput, folder: Path) -> str:
        return self._target(source.step, source.channel, folder) if isinstance(source, StepOutput) else source

    def run(self) -> WorkflowResult:
        started = time.time()
        workflow = self.workflow
        parallel = min(self.request.max_parallel or os.cpu_count() or 1, len(workflow.steps))
        with self._concurrent(parallel):  # workers warm up while MLflow loads
            experiment_id = self.tracker.experiment_id(self.base.experiment or workflow.name)
            parent, done = self._parent_run(experiment_id)
            results = {name: StepResult(name, FINISHED, reason=REUSED) for name in done}
            status = FAILED  # unless the steps end as they should
            try:
                self._run_steps(parent, results, parallel)
                ordered = [results[name] for name in workflow.steps]
                status = KILLED if self._stop.is_set() else FINISHED if all(s.ok for s in ordered) else FAILED
            finally:
                self.tracker.end_run(parent, status, {}, {})
        return WorkflowResult(
            workflow.name, self.execution, parent, str(self.folder), ordered, time.time() - started
        )

    def _run_steps(self, parent: str, results: dict[str, StepResult], parallel: int) -> None:
        """Start each step once its needs ended FINISHED, at most ``parallel`` jobs at once, until
        all ended. A step's dependents start as soon as its job ends, while its run completes."""
        steps = self.workflow.steps
        jobs: dict[Future[str], str] = {}  # the running jobs: each future gets the status it ended with
        runs: dict[str, Future[RunResult]] = {}
        with (
            progress_bar(len(steps) - len(results), self.workflow.name, "step", self.base.progress) as bar,
            ThreadPoolExecutor(max_workers=len(steps)) as executor,  # completing runs need no slot
        ):
            try:
                while len(results) < len(steps):
                    for name in self._ready(results, set(jobs.values()))[: parallel - len(jobs)]:
                        ended: Future[str] = Future()
                        jobs[ended] = name
                        runs[name] = executor.submit(self._run_step, name, parent, ended)
                    if not jobs:  # cannot happen: every step is ready, running or skipped
                        raise RuntimeError(f"workflow {self.workflow.name}: no step can start")
                    finished, _ = wait(jobs, return_when=FIRST_COMPLETED)
                    for future in finished:
                        name = jobs.pop(future)
                        results[name] = StepResult(name, future.result())
                        bar.update(1)
                    self._skip_dependents(results)
            except KeyboardInterrupt:
                self._stop.set()
                for name in steps:
                    results.setdefault(name, StepResult(name, NOT_RUN, reason=INTERRUPTED))
            for name, run in runs.items():
                results[name] = _outcome(name, run)

    def _ready(self, results: dict[str, StepResult], running: set[str]) -> list[str]:
        """Steps not started whose needs all finished."""
        started = set(results) | running
        return [
            name
            for name, step in self.workflow.steps.items()
            if name not in started and all(need in results and results[need].ok for need in step.needs)
        ]

    def _skip_dependents(self, results: dict[str, StepResult]) -> None:
        """A step whose need failed or did not run does not run either; nor do its dependents."""
        changed = True
        while changed:
            changed = False
            for name, step in self.workflow.steps.items():
                if name in results:
                    continue
                for need in step.needs:
                    if need in results and not results[need].ok:
                        what = "did not run" if results[need].status == NOT_RUN else "failed"
                        reason = f"not run: needs {need}, which {what}"
                        results[name] = StepResult(name, NOT_RUN, reason=reason)
                        changed = True
                        break

    def _run_step(self, name: str, parent: str, ended: Future[str]) -> RunResult:
        """Run one step, again after an infrastructure failure while its ``retries`` allow;
        ``ended`` learns that it finished as its job ends, before its run completes (its
        dependents start then), or how it ended once no attempt is left."""

        def attempt(handle: JobHandle) -> RunResult:
            if watch(handle, self._stop, lambda: INTERRUPTED) == FINISHED:
                ended.set_result(FINISHED)
            return handle.wait()

        result: RunResult | None = None
        try:
            spec = self._spec(self.workflow.steps[name], self.folder)
            tags = {TAG_PARENT: parent, TAG_STEP: name, TAG_EXECUTION: self.execution}
            handle = api.start(self.backend, self.tracker, spec, tags)
            result = retry.wait_with_retries(
                handle,
                attempt,
                lambda h, job: api.resubmit(h, job, self.backend),
                lambda seconds: INTERRUPTED if self._stop.wait(seconds) else None,
            )
            return result
        finally:
            if not ended.done():  # it failed, or could not start
                ended.set_result(result.status if result is not None else FAILED)

    def _parent_run(self, experiment_id: str) -> tuple[str, set[str]]:
        """The execution's parent run (the last one, reopened, when resuming) and its finished steps."""
        workflow = self.workflow
        found = self.tracker.find_run(experiment_id, TAG_NAME, workflow.name) if self.request.resume else None
        if found:
            tags = self.tracker.run_tags(found)
            if tags.get(TAG_SHA) != workflow.sha256:
                log.warning("%s changed since execution %s began", workflow.path, tags.get(TAG_EXECUTION))
            self.tracker.reopen_run(found)
            self.execution = tags.get(TAG_EXECUTION, self.execution)
            done = set(self.tracker.finished_children(experiment_id, found, TAG_STEP)) & set(workflow.steps)
            return found, done
        if self.request.resume:
            log.warning("no earlier execution of %s to resume: starting a new one", workflow.name)
        parent, _ = self.tracker.start_run(
            experiment=self.base.experiment or workflow.name,
            run_name=f"{workflow.name}-{self.execution}",
            params={**workflow.parameters, **self.request.parameters},
            tags={
                TAG_NAME: workflow.name,
                TAG_EXECUTION: self.execution,
                TAG_SHA: workflow.sha256,
                TAG_FILE: str(workflow.path),
                TAG_OUTPUT: str(self.folder),
            },
        )
        return parent, set()

    @property
    def folder(self) -> Path:
        """Where the execution's outputs without a URI go: one folder per step and channel."""
        return self.root / f"{self.workflow.name}-{self.execution}"

    def _concurrent(self, parallel: int) -> Any:
        """Let the backend prepare for ``parallel`` jobs at once (warm local workers)."""
        concurrent = getattr(self.backend, "concurrent", None)
        if concurrent is None:
            return nullcontext()
        return concurrent(parallel, self.root / f"{self.workflow.name}.log")


def _outcome(step: str, future: Future[RunResult]) -> StepResult:
    """A step's result; a step whose job could not start or whose run could not complete FAILED."""
    try:
        run = future.result()
    except BatcatError as exc:
        return StepResult(step, FAILED, reason=str(exc))
    return StepResult(step, run.status, run, "" if run.ok else run.reason)
