"""IPython magics: ``%load_ext batcat_nb``, then ``%batcat_run`` and friends.

A thin front end over the API. ``%batcat_run`` parses its line with the ``batcat run``
command's own options (``cli.options.run_options``: one definition serves both) and calls
``api.submit``; the other magics read the jobs this session started and the MLflow store.
A mistake is shown as one IPython ``UsageError`` line, without a traceback.

    %batcat_run train.ipynb -p alpha=$alpha --experiment churn
    job = %batcat_run train.ipynb --no-wait     # job.status(), job.wait()
    %batcat_status      %batcat_logs --follow      %batcat_stop JOB
    %batcat_runs --metric test.rmse --ascending  %batcat_params train.ipynb

Defaults are traitlets: ``c.BatcatMagics.default_backend = "docker"`` in an IPython profile,
or ``%config BatcatMagics.default_backend = "docker"``.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Float, Integer, Unicode

from ..errors import BatcatError, UsageError, did_you_mean
from ..manifest import RUNNING
from ..redact import mask_uri
from ..worker import IN_JOB_ENV
from .current_notebook import current_notebook
from .jobs import Jobs, SkippedRun, follow_logs
from .tables import ParameterTable, best_first, runs_frame

if TYPE_CHECKING:
    from ..result import RunResult
    from ..spec import RunRequest

log = logging.getLogger("batcat_nb")

F = TypeVar("F", bound=Callable[..., Any])

NO_WAIT = "--no-wait"
PARAMETER_FLAGS = frozenset({"-p", "--parameters", "-r", "--parameters-raw"})
STOPPED_BY_MAGIC = "stopped with %batcat_stop"
MAGIC_HELP = """
In the magic also:
  NOTEBOOK may be left out: the notebook this cell is in runs, as last saved.
  -p NAME=VALUE (and -r NAME=VALUE) as well as -p NAME VALUE.
  --no-wait  return the job at once: job.status(), job.wait(), %batcat_logs, %batcat_stop.
  $name and {expression} expand Python values in the line.
"""


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics; in terminals too, results show as their summaries."""
    ipython.register_magics(BatcatMagics(shell=ipython))
    plain = ipython.display_formatter.formatters["text/plain"]
    for module, name in (("batcat_nb.result", "RunResult"), ("batcat_nb.sweeps", "SweepResult")):
        plain.for_type_by_name(module, name, lambda result, printer, cycle: printer.text(str(result)))


def _usage_errors(method: F) -> F:
    """batcat's and click's user errors become IPython's UsageError: one line, no traceback."""

    @functools.wraps(method)
    def wrapper(self: Any, line: str = "", *args: Any, **kwargs: Any) -> Any:
        import click

        try:
            return method(self, line, *args, **kwargs)
        except BatcatError as exc:
            raise IPythonUsageError(str(exc)) from None
        except click.UsageError as exc:
            name = f"%{method.__name__}"
            message = f"{name}: {exc.format_message()} ({name} --help lists the options)"
            raise IPythonUsageError(message) from None

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------- %batcat_run's line


def split_line(line: str) -> list[str]:
    """The magic's line (already variable-expanded by IPython) as shell-like words."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot read the line: {exc} (quote values that contain spaces)") from None


def name_value_pairs(args: list[str]) -> list[str]:
    """``-p name=value`` (the magic's form) to ``-p name value`` (papermill's and the CLI's)."""
    out: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        out.append(token)
        index += 1
        if token == "--":
            out += args[index:]
            break
        if token in PARAMETER_FLAGS and index < len(args):
            name, sep, value = args[index].partition("=")
            if sep and name.isidentifier():
                out += [name, value]
                index += 1
    return out


def parse_run_line(
    line: str, find_notebook: Callable[[], Path | None]
) -> tuple[dict[str, Any], bool, bool] | None:
    """``%batcat_run``'s line to (``batcat run``'s options, wait, notebook detected); None after --help."""
    import click

    from ..cli.run import run as run_command

    args = split_line(line)
    wait = NO_WAIT not in args
    args = name_value_pairs([a for a in args if a != NO_WAIT])
    settings: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
    try:
        try:
            context = run_command.make_context("%batcat_run", list(args), **settings)
            detected = False
        except click.MissingParameter as exc:
            if exc.param is None or exc.param.name != "notebook":
                raise
            notebook = find_notebook()
            if notebook is None:
                raise UsageError(
                    "no NOTEBOOK given, and this kernel's notebook is unknown (not a JupyterLab, "
                    "Notebook or VS Code session): name it, e.g. %batcat_run path/to/notebook.ipynb"
                ) from None
            context = run_command.make_context("%batcat_run", [str(notebook), *args], **settings)
            detected = True
    except click.exceptions.Exit:  # --help: click has printed the options
        print(MAGIC_HELP.rstrip())
        return None
    return context.params, wait, detected


def quiet_tqdm_import() -> None:
    """Import tqdm.auto without its warning in a kernel lacking ipywidgets (mlflow imports it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import tqdm.auto  # noqa: F401


# --------------------------------------------------------------------------- the magics


@magics_class
class BatcatMagics(Magics):
    """``%batcat_run``, ``%batcat_status``, ``%batcat_logs``, ``%batcat_stop``, ``%batcat_runs``,
    ``%batcat_rerun``, ``%batcat_params``."""

    default_backend = Unicode(
        None, allow_none=True, help="Backend when %batcat_run names none (before $BATCAT_BACKEND)."
    ).tag(config=True)
    tracking_uri = Unicode(
        None, allow_none=True, help="MLflow store when a line names none (before $MLFLOW_TRACKING_URI)."
    ).tag(config=True)
    mlflow_ui_url = Unicode(
        None, allow_none=True, help="The MLflow UI's address (e.g. from `batcat ui`): summaries link to runs."
    ).tag(config=True)
    progress = Bool(True, help="Show progress and the job's log while %batcat_run waits.").tag(config=True)
    runs_last = Integer(20, help="How many runs %batcat_runs shows without --last.").tag(config=True)
    poll_interval = Float(2.0, help="Seconds between looks at a remote job or a log.").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.jobs = Jobs()

    @line_magic
    @_usage_errors
    def batcat_run(self, line: str = "") -> Any:
        """Run a notebook as a tracked batch job, with the options of ``batcat run``.

        %batcat_run [NOTEBOOK] [-p NAME=VALUE ...] [--backend NAME] [-e NAME] [--no-wait] ...

        Without NOTEBOOK, this notebook runs, as last saved. Returns the RunResult or, with
        --no-wait, the job at once (job.status(), job.wait()). Inside a batch job it does
        nothing but say so: a job never submits itself again. %batcat_run --help lists the options.
        """
        in_job = os.environ.get(IN_JOB_ENV)
        if in_job:
            print(f"batcat: not submitting: this notebook is itself running as the batch job {in_job}")
            return SkippedRun(in_job)
        parsed = parse_run_line(line, lambda: current_notebook(self.shell))
        if parsed is None:
            return None
        options, wait, detected = parsed
        if detected:
            print(f"batcat: running this notebook, {options['notebook']}, as last saved")
        from .. import api
        from ..cli.options import request_from_options, sweep_from_options

        quiet_tqdm_import()
        sweep = sweep_from_options(options)
        if sweep is not None:  # --grid / --sweep: the CLI's sweep, many runs, waited for
            if not wait:
                raise UsageError("--no-wait starts one run; a sweep (--grid, --sweep) waits for its runs")
            from ..sweeps import run_sweep

            self._with_defaults(sweep.base, wait)
            swept = run_sweep(sweep)
            swept.show(self.shell)
            return swept
        request = self._with_defaults(request_from_options(options), wait)
        job = self.jobs.add(api.submit(request), self.poll_interval)
        if not wait:
            job.complete_in_background()
            return job
        result = self._linked(job.follow())
        result.show(self.shell)
        return result

    @line_magic
    @_usage_errors
    @magic_arguments()
    @argument("job", nargs="?", help="Job name, MLflow run id or name prefix (default: the last job).")
    def batcat_status(self, line: str = "") -> Any:
        """The state of a job started in this session: its card, or its summary once it ended."""
        if self._note_in_job("%batcat_status"):
            return None
        return self.jobs.get(parse_argstring(self.batcat_status, line).job)

    @line_magic
    @_usage_errors
    @magic_arguments()
    @argument("job", nargs="?", help="Job name, MLflow run id or name prefix (default: the last job).")
    @argument("-f", "--follow", action="store_true", help="Keep printing until the job ends.")
    def batcat_logs(self, line: str = "") -> None:
        """The log of a job started in this session."""
        if self._note_in_job("%batcat_logs"):
            return
        args = parse_argstring(self.batcat_logs, line)
        job = self.jobs.get(args.job)
        if args.follow:
            follow_logs(job, self.poll_interval)
        else:
            print(job.logs() or f"(no log from {job.job_name} yet)", end="")

    @line_magic
    @_usage_errors
    @magic_arguments()
    @argument("job", help="Job name, MLflow run id or name prefix.")
    def batcat_stop(self, line: str = "") -> Any:
        """Stop a job; its run ends KILLED and its partial notebook is kept."""
        if self._note_in_job("%batcat_stop"):
            return None
        job = self.jobs.get(parse_argstring(self.batcat_stop, line).job)
        status = job.status()
        if status != RUNNING:
            print(f"batcat: {job.job_name} has already ended: {status}")
        else:
            job.cancel(STOPPED_BY_MAGIC)
        return self._linked(job.wait())

    @line_magic
    @_usage_errors
    @magic_arguments()
    @argument("-e", "--experiment", action="append", help="Experiment (repeat to compare several).")
    @argument("-n", "--last", type=int, default=None, help="How many recent runs (default 20).")
    @argument("-m", "--metric", help="Sort by this metric, best (highest) first.")
    @argument("--ascending", action="store_true", help="With --metric: lowest first (losses, errors).")
    @argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or mlflow-store/).")
    def batcat_runs(self, line: str = "") -> Any:
        """Recent runs as a table: one row a run, parameters and metrics as columns.

        Default experiments: those of this session's jobs, else this notebook's, else all.
        """
        args = parse_argstring(self.batcat_runs, line)
        from ..tracking import Tracker, default_tracking_uri

        quiet_tqdm_import()
        last = args.last if args.last is not None else self.runs_last
        if last < 1:
            raise UsageError(f"--last takes a positive number of runs, not {last}")
        uri = args.tracking_uri or self.tracking_uri or default_tracking_uri()
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            print(f"batcat: no runs yet: the MLflow store {mask_uri(uri)} does not exist")
            return runs_frame(None, {}, last).set_index("run")
        client = Tracker(uri).client
        experiments, label = self._experiments(client, args.experiment)
        frame = runs_frame(client, experiments, last)
        if args.metric and len(frame):
            frame = best_first(frame, args.metric, args.ascending)
        order = f"best {args.metric} first" if args.metric else "newest first"
        if len(frame):
            print(f"{len(frame)} recent run{'s' * (len(frame) != 1)} of {label}, {order}")
        else:
            print(f"batcat: no runs of {label}")
        return frame.set_index("run")

    @line_magic
    @_usage_errors
    @magic_arguments()
    @argument("run_id", help="The MLflow run to run again.")
    @argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    @argument("-b", "--backend", help="Run it elsewhere (default: where it ran).")
    @argument("--tracking-uri", help="The store holding RUN_ID (default: as %%batcat_run).")
    @argument("--image", help="Run it in this image, not its recorded one.")
    @argument("--from-environment", action="store_true", help="Build the image from its environment.txt.")
    @argument("--base-image", help="With --from-environment: the base image to build on.")
    def batcat_rerun(self, line: str = "") -> Any:
        """Run a recorded run again, as it was; the summary compares its metrics with the original's."""
        if self._note_in_job("%batcat_rerun"):
            return None
        from ..cli.rerun import image_options
        from ..parameters import collect
        from ..reruns import rerun

        args = parse_argstring(self.batcat_rerun, line)
        parameters = collect(values=[tuple(pair) for pair in args.parameter])
        return rerun(
            args.run_id,
            parameters,
            backend=args.backend,
            tracking_uri=args.tracking_uri or self.tracking_uri,
            backend_options=image_options(args.image, args.base_image, args.from_environment),
            from_environment=args.from_environment,
            progress=self.progress,
        )

    @line_magic
    @_usage_errors
    @magic_arguments()
    @argument("notebook", nargs="?", help="The notebook (default: this one, as last saved).")
    def batcat_params(self, line: str = "") -> ParameterTable:
        """The parameters a notebook declares: types, defaults and help."""
        from ..notebook import load_notebook

        path = parse_argstring(self.batcat_params, line).notebook or current_notebook(self.shell)
        if path is None:
            raise UsageError("no NOTEBOOK given, and this kernel's notebook is unknown: name it")
        notebook = load_notebook(path)
        return ParameterTable(notebook.path, notebook.parameters())

    # ----------------------------------------------------------------------- helpers

    def _with_defaults(self, request: RunRequest, wait: bool) -> RunRequest:
        """The traitlets fill what the line leaves out (before $BATCAT_* and pyproject.toml)."""
        if request.backend is None and self.default_backend:
            request.backend = self.default_backend
        request.tracking_uri = request.tracking_uri or self.tracking_uri
        request.progress = request.progress and self.progress and wait
        return request

    def _note_in_job(self, magic: str) -> bool:
        in_job = os.environ.get(IN_JOB_ENV)
        if in_job:
            print(f"batcat: {magic} does nothing inside the batch job {in_job}")
        return bool(in_job)

    def _linked(self, result: RunResult) -> RunResult:
        """Give the summary a link to the run when the MLflow UI's address is configured."""
        if result.run_url is None and self.mlflow_ui_url and result.run_id and result.experiment_id:
            from ..ui import run_url

            result.run_url = run_url(
                result.tracking_uri, result.experiment_id, result.run_id, self.mlflow_ui_url
            )
        return result

    def _experiments(self, client: Any, names: list[str] | None) -> tuple[dict[str, str], str]:
        """Experiments to list (id: name) and how to name them in the note above the table."""
        existing = {e.name: e.experiment_id for e in client.search_experiments()}
        if names:
            for name in [n for n in names if n not in existing]:  # not an error: no runs yet, or a typo
                print(f"batcat: no experiment '{name}' in the MLflow store yet{did_you_mean(name, existing)}")
        else:
            notebook = current_notebook(self.shell, ask_servers=False)
            for candidates in (self.jobs.experiments(), [notebook.stem] if notebook else []):
                names = [name for name in candidates if name in existing]
                if names:
                    break
            if not names:
                return {i: n for n, i in existing.items()}, "all experiments"
        label = f"experiment{'s' * (len(names) > 1)} " + ", ".join(f"'{n}'" for n in names)
        return {existing[n]: n for n in names if n in existing}, label
