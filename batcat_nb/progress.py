"""Progress bars through ``tqdm.auto``: a widget in Jupyter when ipywidgets is there, else text."""

from __future__ import annotations

import warnings
from typing import Any


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar; a kernel without ipywidgets gets the text bar without tqdm's warning about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
