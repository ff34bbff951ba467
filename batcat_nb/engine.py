"""The papermill engine that executes every batcat notebook.

``papermill in.ipynb out.ipynb --engine batcat`` (or ``engine_name="batcat"``) executes as
papermill's default engine does and records the run in MLflow as ``batcat run`` would. The
batcat worker uses the same engine with a kernel it started early and the run it was handed.
"""

from __future__ import annotations

import logging
from typing import Any

from nbclient.exceptions import CellExecutionError
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine
from traitlets import Unicode

CLEAN_EXIT_VALUES = frozenset({"0", "None", ""})


class PreambleError(RuntimeError):
    """The kernel could not take the job's directory or environment: the job must not run."""


class BatcatNotebookClient(PapermillNotebookClient):
    """papermill's client, plus: a silent preamble, clean ``sys.exit(0)``, quick shutdown."""

    preamble = Unicode("", help="code run silently in the kernel before the first cell")

    def __init__(self, nb_man: Any, **kwargs: Any) -> None:
        kwargs.setdefault("shutdown_kernel", "immediate")
        super().__init__(nb_man, **kwargs)

    def execute(self, **kwargs: Any) -> Any:
        # A kernel handed in by the worker is ours to shut down too, at once, when done.
        return super().execute(cleanup_kc=True, **kwargs)

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
                self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)


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
            return cls._execute(nb_man, kernel_name, kwargs.pop("batcat_preamble"), **kwargs)
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
            timeout=execution_timeout or kwargs.pop("timeout", None),
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logging.getLogger("papermill"),
            **{k: v for k, v in kwargs.items() if k != "timeout"},
        )
        return client.execute()
