"""The options of ``batcat run`` (and ``submit``, and ``%batcat_run``, which parses with them).

``--help`` lists them in sections: parameters, run, tracking, sweep, containers, then one section
per backend, each defined in that backend's ``cli`` module (``backends.BACKEND_CLIS``).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from ..backends import BACKEND_CLIS, option_keys
from ..config import parse_pairs

OTHER = "Other options"
SECTIONS = ("Parameters", "Run", "Tracking", "Sweep", "Containers (docker, sagemaker)")


class SectionOption(click.Option):
    """An option that ``--help`` lists under its ``section``."""

    def __init__(self, *args: Any, section: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.section = section


class SectionedCommand(click.Command):
    """A command whose ``--help`` groups its options by section, in the order they are declared."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:
                sections.setdefault(getattr(param, "section", OTHER), []).append(record)
        sections[OTHER] = sections.pop(OTHER, [])  # --help last
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows)


def option(section: str, *decls: str, **attrs: Any) -> Any:
    """``click.option`` listed under ``section`` in ``--help``."""
    return click.option(*decls, cls=SectionOption, section=section, **attrs)


def parameters_option(help_text: str, section: str | None = None) -> Any:
    """``-p NAME VALUE``, repeatable, typed as papermill types it (``run``, ``rerun``, workflows)."""
    decls = ("-p", "--parameters", "values")
    attrs: dict[str, Any] = {"nargs": 2, "multiple": True, "metavar": "NAME VALUE", "help": help_text}
    return option(section, *decls, **attrs) if section else click.option(*decls, **attrs)


def _core_options() -> list[Any]:
    parameters, run, tracking, sweep, containers = SECTIONS
    return [
        click.argument("notebook", type=click.Path(dir_okay=False)),
        parameters_option(
            "Parameter, typed as papermill does (int, float, True/False/None, str).", section=parameters
        ),
        option(
            parameters,
            "-r",
            "--parameters-raw",
            "raw",
            nargs=2,
            multiple=True,
            metavar="NAME VALUE",
            help="Parameter passed as a string, untouched.",
        ),
        option(
            parameters,
            "-y",
            "--parameters-yaml",
            "yaml_texts",
            multiple=True,
            metavar="YAML",
            help="Parameters as a YAML mapping.",
        ),
        option(
            parameters,
            "-f",
            "--parameters-file",
            "files",
            multiple=True,
            metavar="FILE",
            help="Parameters from a YAML file.",
        ),
        option(
            parameters,
            "-s",
            "--secret",
            "secrets",
            multiple=True,
            metavar="NAME[=SOURCE]",
            help="Parameter NAME receives a secret, never written anywhere: SOURCE env:VAR "
            "(default env:NAME), on SageMaker also ssm:/PATH or secretsmanager:ID.",
        ),
        option(
            parameters,
            "--allow-unknown-parameters",
            is_flag=True,
            help="Inject parameters the notebook does not declare (with a warning).",
        ),
        option(run, "--backend", "-b", default=None, help="local (default), docker, sagemaker."),
        option(
            run,
            "--retries",
            type=click.IntRange(min=0),
            default=None,
            metavar="N",
            help="Resubmit a job that failed for an infrastructure reason, up to N times.",
        ),
        _channel_option(run, "input"),
        _channel_option(run, "output"),
        option(
            run,
            "--output-dir",
            "-o",
            default=None,
            help="Where executed notebooks go (default: batcat-runs/<job>).",
        ),
        option(run, "--kernel", "-k", default=None, help="Kernel (default: the notebook's)."),
        option(
            run,
            "--timeout",
            type=float,
            default=None,
            help="Stop the whole run after this many seconds (run KILLED).",
        ),
        option(
            run,
            "--execution-timeout",
            type=float,
            default=None,
            help="Stop when one cell runs longer than this many seconds.",
        ),
        option(run, "--log-output", is_flag=True, help="Stream the cells' output here."),
        option(run, "--no-progress", is_flag=True, help="No progress bar."),
        option(
            tracking,
            "--experiment",
            "-e",
            default=None,
            help="MLflow experiment (default: the notebook's name).",
        ),
        option(
            tracking,
            "--tracking-uri",
            default=None,
            help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow-store/mlflow.db).",
        ),
        option(tracking, "--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag for the run."),
        option(
            sweep,
            "--grid",
            "grid",
            multiple=True,
            metavar="NAME=V1,V2,...",
            help="Run every combination of these values (repeatable).",
        ),
        option(
            sweep,
            "--sweep",
            "sweep_file",
            default=None,
            metavar="FILE",
            help="YAML with 'grid: {name: [values]}' and/or 'runs: [{...}]'.",
        ),
        option(
            sweep,
            "--objective",
            default=None,
            metavar="METRIC",
            help="Rank runs by this metric; the parent run records the best.",
        ),
        option(sweep, "--maximize/--minimize", default=False, help="Direction of --objective."),
        option(
            sweep,
            "--max-parallel",
            type=click.IntRange(min=1),
            default=None,
            help="Runs at once (default: the number of cores).",
        ),
        option(sweep, "--fail-fast", is_flag=True, help="Stop at the first failed run."),
        option(
            sweep, "--rerun", is_flag=True, help="Run every combination, even those that finished before."
        ),
        option(
            containers, "--image", default=None, metavar="URI", help="Runner image (SageMaker: its ECR URI)."
        ),
        option(
            containers,
            "--env",
            "env",
            multiple=True,
            metavar="NAME=VALUE",
            help="Environment variable of the job (repeatable).",
        ),
        option(
            containers,
            "--include",
            "include",
            multiple=True,
            metavar="PATH",
            help="File or directory shipped beside the notebook (helper modules, configs).",
        ),
    ]


def _channel_option(section: str, kind: str) -> Any:
    """``--input`` or ``--output``: a channel, whose directory a parameter NAME_dir receives."""
    help_text = f"{kind.capitalize()} channel; a parameter NAME_dir receives its directory."
    return option(section, f"--{kind}", f"{kind}s", multiple=True, metavar="NAME=PATH|S3URI", help=help_text)


def _backend_clis() -> list[Any]:
    return [importlib.import_module(target) for target in BACKEND_CLIS.values()]


def run_options(command: Any) -> Any:
    """Decorate ``command`` with every option of ``batcat run``, core first, then each backend's."""
    options = _core_options()
    for module in _backend_clis():
        options += [option(module.SECTION, *decls, **attrs) for decls, attrs in module.RUN_OPTIONS]
    for decorator in reversed(options):
        command = decorator(command)
    return command


def backend_options_from(options: dict[str, Any]) -> dict[str, Any]:
    """The parsed backend options to ``RunRequest.backend_options``: only those given."""
    found: dict[str, Any] = {}
    for name, key in option_keys().items():
        value = options.get(name)
        if value is None or value == () or value == []:
            continue
        if name == "env":
            value = parse_pairs(value, "--env")
        elif isinstance(value, tuple):
            value = list(value)
        found[key] = value
    return found


def request_from_options(options: dict[str, Any]) -> Any:
    """Click's parsed ``run`` options to a RunRequest."""
    from .. import parameters, secrets
    from ..spec import RunRequest

    return RunRequest(
        notebook=options["notebook"],
        parameters=parameters.collect(
            files=options["files"],
            yaml_texts=options["yaml_texts"],
            values=options["values"],
            raw=options["raw"],
        ),
        secrets=secrets.parse(options["secrets"]),
        backend=options["backend"],
        experiment=options["experiment"],
        inputs=parse_pairs(options["inputs"], "--input"),
        outputs=parse_pairs(options["outputs"], "--output"),
        output_dir=options["output_dir"],
        kernel=options["kernel"],
        timeout=options["timeout"],
        execution_timeout=options["execution_timeout"],
        allow_unknown_parameters=options["allow_unknown_parameters"],
        log_output=options["log_output"],
        progress=not options["no_progress"],
        tracking_uri=options["tracking_uri"],
        tags=parse_pairs(options["tags"], "--tag"),
        backend_options=backend_options_from(options),
        retries=options["retries"],
    )


def sweep_from_options(options: dict[str, Any]) -> Any:
    """The sweep the ``run`` options ask for, or None for a single run."""
    if not options["grid"] and not options["sweep_file"]:
        return None
    from ..sweeps import SweepRequest, grid_combinations, load_sweep_file, parse_grid

    combinations = grid_combinations(parse_grid(list(options["grid"]))) if options["grid"] else []
    if options["sweep_file"]:
        combinations += load_sweep_file(options["sweep_file"])
    return SweepRequest(
        base=request_from_options(options),
        combinations=combinations,
        objective=options["objective"],
        maximize=options["maximize"],
        max_parallel=options["max_parallel"],
        fail_fast=options["fail_fast"],
        rerun=options["rerun"],
    )
