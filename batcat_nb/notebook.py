"""Read a notebook and the parameters its ``parameters`` cell declares, without a kernel."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NotebookError

PARAMETERS_TAG = "parameters"
TEXT_SUFFIXES = (".py", ".md")  # notebooks as text, read with jupytext
# jupyter_client's KernelManager starts python3 for a notebook whose kernelspec says "python",
# and looks kernel names up in lower case: papermill runs such notebooks, so batcat does too.
_KERNEL_ALIASES = {"python": "python3"}

# Types a parameter's default or annotation can declare, by the name users see.
_TYPE_NAMES = {int: "int", float: "float", str: "str", bool: "bool", list: "list", dict: "dict"}


@dataclass(frozen=True)
class Parameter:
    """One name the parameters cell assigns."""

    name: str
    type_name: str  # int, float, str, bool, list, dict, None or the annotation's text
    default: str  # the default as written in the cell
    help: str = ""
    optional: bool = False  # the annotation admits None

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` fits the declared type."""
        if value is None:
            return self.optional or self.type_name == "None"
        expected = {v: k for k, v in _TYPE_NAMES.items()}.get(self.type_name)
        if expected is None:
            return True  # no type we can check: accept anything
        if expected is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if expected is int:
            return isinstance(value, int) and not isinstance(value, bool)
        if expected is list:
            return isinstance(value, (list, tuple))
        return isinstance(value, expected)


@dataclass
class Notebook:
    """A notebook file as JSON, with what batcat needs to know about it."""

    path: Path
    content: dict[str, Any]
    raw: bytes = field(repr=False)

    @property
    def is_text(self) -> bool:
        """A jupytext notebook (``.py``, ``.md``): the job receives it converted to nbformat."""
        return self.path.suffix in TEXT_SUFFIXES

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def kernel_name(self) -> str | None:
        return self.content.get("metadata", {}).get("kernelspec", {}).get("name")

    @property
    def language(self) -> str:
        metadata = self.content.get("metadata", {})
        return (
            metadata.get("kernelspec", {}).get("language")
            or metadata.get("language_info", {}).get("name")
            or "python"
        )

    def parameters_cell(self) -> dict[str, Any] | None:
        for cell in self.content.get("cells", []):
            if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
                return cell
        return None

    def parameters(self) -> list[Parameter] | None:
        """The declared parameters, or None when there is no ``parameters`` cell; a cell with
        a line that is not Python is refused, naming that line."""
        source = self._parameters_source()
        return None if source is None else parse_parameters(source)

    def readable_parameters(self) -> tuple[list[Parameter], list[tuple[int, str]]] | None:
        """What can be read of the ``parameters`` cell, and the (line number, line) skipped,
        as ``papermill --help-notebook`` lists them; None without such a cell."""
        source = self._parameters_source()
        return None if source is None else read_parameters(source)

    def _parameters_source(self) -> str | None:
        cell = self.parameters_cell()
        if cell is None:
            return None
        source = cell.get("source", "")
        return "".join(source) if isinstance(source, list) else str(source)


def kernel_alias(name: str) -> str:
    """The kernel jupyter_client starts for ``name``."""
    return _KERNEL_ALIASES.get(name.lower(), name.lower())


def load_notebook(path: str | Path) -> Notebook:
    """Read and check a notebook file; raise NotebookError naming the problem and the fix."""
    path = Path(path)
    if not path.exists():
        raise NotebookError(f"notebook not found: {path} (check the path; it is relative to {Path.cwd()})")
    if path.is_dir():
        raise NotebookError(f"{path} is a directory: name the notebook (.ipynb, .py, .md) inside it")
    return read_notebook_bytes(path, path.read_bytes())


def read_notebook_bytes(path: Path, raw: bytes) -> Notebook:
    """A notebook from the bytes of a file named ``path`` (which need not exist: a git blob)."""
    if path.suffix in TEXT_SUFFIXES:
        return Notebook(path=path, content=_read_text_notebook(path, raw), raw=raw)
    try:
        content = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotebookError(
            f"{path} is not a notebook: it is not valid JSON ({exc}); "
            "open it in Jupyter and save it again, or pass the .ipynb file"
        ) from None
    if not isinstance(content, dict) or not isinstance(content.get("cells"), list):
        raise NotebookError(f"{path} is not a notebook: it has no list of cells")
    major = content.get("nbformat")
    if major != 4:
        raise NotebookError(
            f"{path} has nbformat {major!r}, batcat needs nbformat 4: "
            f"convert it with `jupyter nbconvert --to notebook --nbformat 4 {path}`"
        )
    return Notebook(path=path, content=content, raw=raw)


def _read_text_notebook(path: Path, raw: bytes) -> dict[str, Any]:
    """A jupytext notebook (percent or light ``.py``, MyST or plain ``.md``) as nbformat JSON."""
    import jupytext

    try:
        notebook = jupytext.reads(raw.decode("utf-8"), fmt=path.suffix)  # the format is guessed
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotebookError(f"{path} is not a notebook jupytext can read: {exc}") from None
    if not notebook.cells:
        raise NotebookError(f"{path} holds no cells: is it a notebook? (jupytext reads # %% cells)")
    if "kernelspec" not in notebook.metadata:  # papermill writes parameters in the kernel's language
        notebook.metadata.setdefault("language_info", {"name": "python"})
    return dict(notebook)


def parse_parameters(source: str) -> list[Parameter]:
    """The assignments of a Python parameters cell, with types, defaults and help comments."""
    found, skipped = read_parameters(source)
    if skipped:
        number, line = skipped[0]
        raise NotebookError(
            f"the parameters cell is not valid Python: line {number} {line.strip()!r}; "
            "keep only assignments there (move magics and other code to the next cell)"
        )
    return found


def read_parameters(source: str) -> tuple[list[Parameter], list[tuple[int, str]]]:
    """The parameters of a cell, skipping each line that is not Python (a ``%magic``, a typo)
    and the statements it breaks; returns them and the (line number, line) skipped."""
    lines = source.splitlines()
    skipped: list[tuple[int, str]] = []
    while True:
        try:
            tree = ast.parse("\n".join(lines))
            break
        except SyntaxError as exc:
            number = exc.lineno or 0
            if not 0 < number <= len(lines) or not lines[number - 1].strip():
                return [], [*skipped, (number, exc.msg)]  # nothing left to skip: give up
            skipped.append((number, lines[number - 1]))
            lines[number - 1] = ""  # line numbers stay those of the cell
    source = "\n".join(lines)
    comments = _line_comments(source)
    found: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, annotation = node.targets[0], None
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, annotation = node.target, node.annotation
        else:
            continue
        if not isinstance(target, ast.Name) or node.value is None:
            continue
        default = ast.get_source_segment(source, node.value) or ""
        type_name, optional = _declared_type(node.value, annotation, source)
        help_text = comments.get(node.end_lineno or node.lineno, "")
        if not help_text and node.lineno > 1:
            help_text = _comment_line(lines[node.lineno - 2])
        found[target.id] = Parameter(target.id, type_name, default, help_text, optional)
    return list(found.values()), sorted(skipped)


def _declared_type(value: ast.expr, annotation: ast.expr | None, source: str) -> tuple[str, bool]:
    if annotation is not None:
        text = (ast.get_source_segment(source, annotation) or "").replace(" ", "")
        wrapped = text.startswith("Optional[") and text.endswith("]")
        parts = [p for p in (text[len("Optional[") : -1] if wrapped else text).split("|") if p]
        optional = "None" in parts or wrapped
        named = [p for p in parts if p != "None"]
        return (named[0] if len(named) == 1 else text), optional
    try:
        literal = ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return "", False
    if literal is None:
        return "None", True
    if isinstance(literal, tuple):
        return "list", False
    return _TYPE_NAMES.get(type(literal), ""), False


def _line_comments(source: str) -> dict[int, str]:
    comments: dict[int, str] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                comments[token.start[0]] = token.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return comments


def _comment_line(line: str) -> str:
    stripped = line.strip()
    return stripped.lstrip("#").strip() if stripped.startswith("#") else ""
