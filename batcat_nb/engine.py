"""The papermill engine that executes every batcat notebook.

``papermill in.ipynb out.ipynb --engine batcat`` (or ``engine_name="batcat"``) executes as
papermill's default engine does and records the run in MLflow as ``batcat run`` would. The
batcat worker uses the same engine with a kernel it started early and the run it was handed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from nbclient.exceptions import CellExecutionError
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine
from traitlets import Any as AnyTrait
from traitlets import Unicode

CLEAN_EXIT_VALUES = frozenset({"0", "None", ""})


class PreambleError(RuntimeError):
    """The kernel could not take the job's directory or environment: the job must not run."""


class BatcatNotebookClient(PapermillNotebookClient):
    """papermill's client, plus: a silent preamble, clean ``sys.exit(0)``, quick shutdown."""

    preamble = Unicode("", help="code run silently in the kernel before the first cell")
    progress_file = Unicode("", help="where to write '<cells done> <cells>' after each cell")
    masker = AnyTrait(None, allow_none=True, help="a redact.Masker: secret values out of every output")

    def __init__(self, nb_man: Any, **kwargs: Any) -> None:
        kwargs.setdefault("shutdown_kernel", "immediate")
        if kwargs.get("masker"):  # a value printed in pieces is whole again, for the last mask
            kwargs.setdefault("coalesce_streams", True)
        super().__init__(nb_man, **kwargs)
        self._partial_lines: dict[str, str] = {}  # stream name -> text not yet logged

    def execute(self, **kwargs: Any) -> Any:
        # A kernel handed in by the worker is ours to shut down too, at once, when done.
        return super().execute(cleanup_kc=True, **kwargs)

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        if self.masker:  # before the output reaches the notebook, its autosave or the log
            self.masker.data(msg["content"])
        return super().process_message(msg, cell, cell_index)

    def log_output_message(self, output: Any) -> None:
        """With secrets, streams reach the log whole lines at a time, each line masked: a value
        printed in pieces is masked too."""
        if not self.masker or output.get("output_type") != "stream":
            return super().log_output_message(output)
        text = self._partial_lines.pop(output.name, "") + "".join(output.text)
        complete, newline, rest = text.rpartition("\n")
        if rest:
            self._partial_lines[output.name] = rest
        if newline:
            self._log_stream(output.name, complete + newline)

    def _flush_log(self) -> None:
        for name in list(self._partial_lines):
            self._log_stream(name, self._partial_lines.pop(name))

    def _log_stream(self, name: str, text: str) -> None:
        from nbformat import NotebookNode

        masked = self.masker.text(text)
        super().log_output_message(NotebookNode(output_type="stream", name=name, text=masked))

    def papermill_execute_cells(self) -> None:
        if self.preamble:
            reply = self.wait_for_reply(self.kc.execute(self.preamble, silent=True, store_history=False))
            content = (reply or {}).get("content", {})
            if content.get("status") != "ok":  # the job would run without its run or its directory
                error = f"{content.get('ename')}: {content.get('evalue')}"
                raise PreambleError(f"the kernel refused the job's environment: {error}")
        for index, cell in enumerate(self.nb.cells):
            try:
                self.nb_man.cell_start(cell, index)
                self.execute_cell(cell, index)
            except CellExecutionError as ex:
                if ex.ename == "SystemExit" and ex.evalue in CLEAN_EXIT_VALUES:
                    _mark_clean_exit(self.nb.cells[index])
                else:
                    self.nb_man.cell_exception(self.nb.cells[index], cell_index=index, exception=ex)
                break
            finally:
                self._flush_log()
                self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)
                self._report_progress(index + 1)

    def _report_progress(self, done: int) -> None:
        if self.progress_file:
            Path(self.progress_file).write_text(f"{done} {len(self.nb.cells)}")


def _mark_clean_exit(cell: Any) -> None:
    """Turn the SystemExit(0) 'error' into a note: stopping early is not a failure."""
    from nbformat.v4 import new_output

    cell.outputs = [o for o in cell.outputs if o.get("output_type") != "error"]
    cell.outputs.append(
        new_output("stream", name="stdout", text="[batcat] sys.exit(0): the notebook stopped here.\n")
    )


class BatcatEngine(NBClientEngine):
    """papermill engine ``batcat``."""

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
        if "batcat_preamble" in kwargs:  # called by the batcat worker: the run is handled there
            preamble = kwargs.pop("batcat_preamble")
            return cls._execute(
                nb_man, kernel_name, preamble, masker=kwargs.pop("batcat_masker", None), **kwargs
            )
        from .engine_tracking import tracked_papermill_run

        with tracked_papermill_run(nb_man, kernel_name, kwargs) as preamble:
            return cls._execute(nb_man, kernel_name, preamble, **kwargs)

    @classmethod
    def _execute(cls, nb_man: Any, kernel_name: str, preamble: str, **kwargs: Any) -> Any:
        kwargs.pop("input_path", None)
        execution_timeout = kwargs.pop("execution_timeout", None)
        start_timeout = kwargs.pop("start_timeout", 60)
        client = BatcatNotebookClient(
            nb_man,
            preamble=preamble,
            progress_file=kwargs.pop("batcat_progress_file", ""),
            timeout=execution_timeout or kwargs.pop("timeout", None),
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logging.getLogger("papermill"),
            **{k: v for k, v in kwargs.items() if k != "timeout"},
        )
        return client.execute()
