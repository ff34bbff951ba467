"""What deploying a workflow should leave in AWS, worked out before any write.

Each step becomes the request ``batcat run --backend sagemaker`` builds for its notebook
(``api.resolve_spec`` then the SageMaker backend's own ``_resolve``/``_request``, so the same
checks run: role, bucket, image, botocore's model), with the execution's name left as a
placeholder in its S3 URIs. Everything of one workflow lives under ``<s3-prefix>/<name>/``:

- ``code/<sha256>/``: a step's notebook and includes, addressed by their content;
- ``executions/<execution>/parameters.json`` and ``executions/<execution>/<step>/``
  (``input/batcat/job.json``, ``output/notebook/``, outputs given without a URI);
- ``deployment.json``: what ``trigger``, ``status``, ``sync`` and ``delete`` need to know.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...contract import code_files
from ...errors import UsageError
from ...job_run import TAG_EXECUTION, TAG_STEP, TAG_WORKFLOW, workflow_env
from ...layout import CODE_CHANNEL
from ...redact import without_credentials
from ...storage import is_s3, split_s3
from . import stepfunctions as sfn
from .backend import SageMakerConfig, checked_s3_prefix

log = logging.getLogger("batcat_nb")

if TYPE_CHECKING:
    from ...workflow.model import Step, Workflow

S3_URI_PARAMETER = "s3_uri"  # receives the object's URI in executions started by on_s3
DEPLOYMENT_FILE = "deployment.json"
ENV_VALUE_MAX = 256  # SageMaker's limit on one environment value of a job


@dataclasses.dataclass
class StepFunctionsConfig:
    """``[tool.batcat.stepfunctions]`` or ``BATCAT_STEPFUNCTIONS_*``: the state machine's own."""

    execution_role: str | None = None  # the role Step Functions, Scheduler and EventBridge assume
    poll_interval: int = 30  # seconds between two DescribeProcessingJob of a step
    job_tracking_uri: str | None = None  # the MLflow server as the jobs reach it (they record their runs)


@dataclasses.dataclass
class Names:
    """Every resource of a workflow carries its name (Metaflow names its state machines so too)."""

    workflow: str

    @property
    def base(self) -> str:
        return f"batcat-{sfn.slug(self.workflow, 50)}"

    @property
    def state_machine(self) -> str:
        return self.base

    @property
    def schedule(self) -> str:
        return self.base  # in its own group, which carries the tags schedules cannot

    @property
    def s3_rule(self) -> str:
        return f"{self.base}-on-s3"

    @property
    def failure_rule(self) -> str:
        return f"{self.base}-failed"

    @property
    def job_role(self) -> str:
        return f"{self.base}-job"

    @property
    def execution_role(self) -> str:
        return f"{self.base}-states"


@dataclasses.dataclass
class Plan:
    """The desired state of one workflow in AWS."""

    workflow: Workflow
    region: str
    root: str  # s3://bucket/prefix/<name>/
    role: str  # the jobs' role
    execution_role: str
    steps: list[list[sfn.StepPlan]]  # dependency levels
    code: dict[str, list[tuple[Path, str]]]  # code URI -> (file, key under it)
    defaults: dict[str, Any]
    poll_interval: int

    @property
    def names(self) -> Names:
        return Names(self.workflow.name)

    @property
    def bucket(self) -> str:
        return split_s3(self.root)[0]

    @property
    def root_key(self) -> str:
        return split_s3(self.root)[1]

    def definition(self) -> dict[str, Any]:
        return sfn.definition(
            self.steps,
            bucket=self.bucket,
            root_key=self.root_key,
            defaults=self.defaults,
            poll_seconds=self.poll_interval,
            comment=f"batcat workflow {self.workflow.name} ({self.workflow.path.name})",
        )

    def record(self, state_machine_arn: str) -> dict[str, Any]:
        """``deployment.json``."""
        return {
            "workflow": self.workflow.name,
            "file": str(self.workflow.path),
            "region": self.region,
            "root": self.root,
            "state_machine": state_machine_arn,
            "parameters": self.defaults,
            "steps": [
                {
                    "name": p.name,
                    "folder": step_folder(p.name),
                    "job_prefix": p.job_prefix,
                    "retries": p.retries,
                }
                for level in self.steps
                for p in level
            ],
        }


def workflow_root(name: str, s3_prefix: str | None) -> str:
    """``s3://bucket/prefix/<name>/``: where everything of the workflow lives."""
    bucket, key = checked_s3_prefix(s3_prefix, "the workflow")
    return f"s3://{bucket}/{'/'.join(filter(None, [key.strip('/'), name]))}/"


def step_folder(step: str) -> str:
    return sfn.slug(step, 63)


def build(workflow: Workflow, options: dict[str, Any], config: StepFunctionsConfig) -> Plan:
    """Resolve every step as ``batcat run --backend sagemaker`` would, and the state machine."""
    from ...api import resolve_spec
    from ...config import resolve
    from ...notebook import load_notebook
    from ...spec import RunRequest
    from .backend import SageMakerBackend

    base = resolve(SageMakerConfig, "sagemaker", {k: v for k, v in options.items() if v is not None})
    root = workflow_root(workflow.name, base.s3_prefix)
    if not config.execution_role:
        raise UsageError(
            "no execution role for the state machine; pass --execution-role ARN (or --create-roles, "
            "or set BATCAT_STEPFUNCTIONS_EXECUTION_ROLE); `batcat workflow policy` prints what it needs"
        )
    from . import aws

    aws.check_role_arn(config.execution_role)
    declared = {
        name: load_notebook(step.notebook).parameters() or [] for name, step in workflow.steps.items()
    }
    defaults = _defaults(workflow, declared)
    tracking_uri = job_tracking_uri(config.job_tracking_uri)
    backend = SageMakerBackend()
    plans: dict[str, sfn.StepPlan] = {}
    code: dict[str, list[tuple[Path, str]]] = {}
    region = ""
    role = ""
    for name, step in workflow.steps.items():
        names = {p.name for p in declared[name]}
        dynamic = sorted((names & set(defaults)) - set(step.parameters))
        given = {**{k: defaults[k] for k in dynamic}, **step.parameters}
        folder = step_folder(name)
        request = RunRequest(
            notebook=str(step.notebook),
            parameters=given,
            backend="sagemaker",
            inputs=_inputs(workflow, step, root),
            outputs={k: v if v and is_s3(v) else f"/{k}" for k, v in step.outputs.items()},
            tags={TAG_WORKFLOW: workflow.name, TAG_STEP: name, TAG_EXECUTION: sfn.EXECUTION},
            backend_options={
                **{k: v for k, v in options.items() if v is not None},
                **step.options,
                "s3_prefix": f"{root}executions/{sfn.EXECUTION}",
                "include": [str(p) for p in step.include],
            },
        )
        spec = resolve_spec(request)
        spec.job_name = folder
        resolved = backend._resolve(spec)
        region, role = resolved.region, resolved.role
        env = workflow_env(tracking_uri, workflow.name, name, sfn.EXECUTION) if tracking_uri else {}
        job_request = _request(spec, resolved, env)
        files = code_files(Path(spec.notebook), resolved.include)
        code_uri = f"{root}code/{_digest(files)}/"
        code[code_uri] = files
        for channel in job_request["ProcessingInputs"]:
            if channel["InputName"] == CODE_CHANNEL:
                channel["S3Input"]["S3Uri"] = code_uri
        job_file = spec.worker_job()
        job_key = split_s3(resolved.job_uri(folder, "input", "batcat"))[1] + "job.json"
        plans[name] = sfn.StepPlan(
            name=name,
            job_prefix=sfn.job_prefix(workflow.name, name),
            request=job_request,
            job_file=job_file,
            job_file_key=job_key,
            static_parameters={k: v for k, v in spec.parameters.items() if k not in dynamic},
            dynamic_parameters=dynamic,
            retries=step.retries,
        )
    return Plan(
        workflow=workflow,
        region=region,
        root=root,
        role=role,
        execution_role=config.execution_role,
        steps=[[plans[name] for name in level] for level in workflow.levels()],
        code=code,
        defaults=defaults,
        poll_interval=config.poll_interval,
    )


def job_tracking_uri(given: str | None) -> str | None:
    """The MLflow server the steps' jobs record their own runs in, or None (then `sync` does).

    ``given`` (``--job-tracking-uri``) is the server as the jobs see it, which this machine may
    not reach; without it, the configured store when a job on AWS can reach it.
    """
    from .backend import _tracking_reachable

    if given:
        if not given.startswith(("http://", "https://", "arn:")) or given.endswith("://"):
            raise UsageError(
                f"--job-tracking-uri {given!r} is not an MLflow server a job can reach; give the "
                "server's http(s):// address as the jobs see it, or a SageMaker managed MLflow ARN"
            )
        if len(given) > ENV_VALUE_MAX:
            raise UsageError(
                f"--job-tracking-uri is {len(given)} characters long; a job's environment value "
                f"holds at most {ENV_VALUE_MAX}"
            )
        if without_credentials(given) != given:
            raise UsageError(
                "--job-tracking-uri holds a credential, which every job's description would show; "
                "leave it out of the URI"
            )
        return given
    from ...config import CoreConfig, resolve
    from ...tracking import default_tracking_uri

    configured = resolve(CoreConfig, "").tracking_uri or default_tracking_uri()
    if _tracking_reachable(configured):
        return configured
    log.warning(
        "the steps' jobs cannot reach this tracking store (a sqlite: file or a server on this "
        "machine's loopback): `batcat workflow sync NAME` records their runs here, or deploy "
        "with --job-tracking-uri URI of a server they can reach"
    )
    return None


def _request(spec: Any, resolved: Any, env: dict[str, str]) -> dict[str, Any]:
    """The backend's CreateProcessingJob request, checked with a sample execution filled in."""
    from . import aws
    from .backend import _request

    request = _request(spec, resolved, env)
    sample = json.loads(json.dumps(request).replace(sfn.EXECUTION, "sample-execution"))
    sample["ProcessingJobName"] = sfn.job_name(sfn.job_prefix("w" * 63, "s" * 63), 99, "0" * sfn.HASH_LENGTH)
    aws.validate_request("sagemaker", "CreateProcessingJob", sample)
    return request


def _defaults(workflow: Workflow, declared: dict[str, list[Any]]) -> dict[str, Any]:
    """The execution's parameters before a trigger's: the workflow's, and ``s3_uri`` where declared."""
    defaults = dict(workflow.parameters)
    if S3_URI_PARAMETER not in defaults:
        for parameters in declared.values():
            found = next((p for p in parameters if p.name == S3_URI_PARAMETER), None)
            if found is not None:
                try:
                    defaults[S3_URI_PARAMETER] = ast.literal_eval(found.default)
                except (ValueError, SyntaxError):
                    defaults[S3_URI_PARAMETER] = ""
                break
    return defaults


def _inputs(workflow: Workflow, step: Step, root: str) -> dict[str, str]:
    """Channel -> S3 URI: given URIs as they are, another step's output where it lands."""
    from ...workflow.model import StepOutput

    inputs = {}
    for channel, source in step.inputs.items():
        if isinstance(source, StepOutput):
            inputs[channel] = output_uri(workflow, root, source.step, source.channel, sfn.EXECUTION)
        elif is_s3(source):
            inputs[channel] = source
        else:
            raise UsageError(
                f"step {step.name}: input '{channel}' is the local path {source}; a deployed workflow "
                "reads s3:// URIs or other steps' outputs: upload it and write its URI"
            )
    return inputs


def output_uri(workflow: Workflow, root: str, step: str, channel: str, execution: str) -> str:
    """Where a step's output channel lands in one execution."""
    given = workflow.steps[step].outputs.get(channel)
    if given and is_s3(given):
        return given
    return f"{root}executions/{execution}/{step_folder(step)}/output/{channel}/"


def _digest(files: list[tuple[Path, str]]) -> str:
    digest = hashlib.sha256()
    for path, key in files:
        digest.update(key.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]
