"""Notebooks as files: text notebooks, what is not a notebook, the parameters cell read line by
line, kernel names; exact enough for mutation testing (``make mutate``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batcat_nb.errors import NotebookError
from batcat_nb.notebook import (
    Parameter,
    kernel_alias,
    load_notebook,
    parse_parameters,
    read_notebook_bytes,
    read_parameters,
)

PERCENT = '# %% tags=["parameters"]\nx = 1\n\n# %%\nprint(x)\n'
R_PERCENT = (
    "# ---\n# jupyter:\n#   kernelspec:\n#     name: ir\n#     display_name: R\n#     language: R\n# ---\n"
    "\n# %%\nx <- 1\n"
)


def test_text_notebooks_are_read_with_jupytext(tmp_path):
    (tmp_path / "a.py").write_text(PERCENT)
    notebook = load_notebook(tmp_path / "a.py")
    assert notebook.is_text and notebook.raw == PERCENT.encode()
    assert [c["source"] for c in notebook.content["cells"]] == ["x = 1", "print(x)"]
    assert notebook.content["metadata"]["language_info"] == {"name": "python"}  # papermill reads it
    assert notebook.parameters() == [Parameter("x", "int", "1")]
    (tmp_path / "b.md").write_text('# Title\n\n```python tags=["parameters"]\ny = 2\n```\n')
    markdown = load_notebook(tmp_path / "b.md")
    assert markdown.is_text and markdown.parameters() == [Parameter("y", "int", "2")]
    (tmp_path / "r.py").write_text(R_PERCENT)
    r = load_notebook(tmp_path / "r.py")
    assert "language_info" not in r.content["metadata"]  # its kernelspec names the language
    assert (r.kernel_name, r.language) == ("ir", "R")
    (tmp_path / "c.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4}))
    assert not load_notebook(tmp_path / "c.ipynb").is_text


def test_text_files_that_are_no_notebooks_are_named(tmp_path):
    (tmp_path / "empty.py").write_text("")
    with pytest.raises(NotebookError) as empty:
        load_notebook(tmp_path / "empty.py")
    assert str(empty.value) == (
        f"{tmp_path / 'empty.py'} holds no cells: is it a notebook? (jupytext reads # %% cells)"
    )
    (tmp_path / "binary.py").write_bytes(b"\xff\xfe")
    with pytest.raises(NotebookError) as binary:
        load_notebook(tmp_path / "binary.py")
    assert str(binary.value) == (
        f"{tmp_path / 'binary.py'} is not a notebook jupytext can read: "
        "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"
    )


def test_what_is_not_an_ipynb_notebook_is_named_with_the_fix():
    path = Path("dir/x.ipynb")
    with pytest.raises(NotebookError) as undecodable:
        read_notebook_bytes(path, b"\xff")
    assert str(undecodable.value) == (
        "dir/x.ipynb is not a notebook: it is not valid JSON ('utf-8' codec can't decode byte 0xff in "
        "position 0: invalid start byte); open it in Jupyter and save it again, or pass the .ipynb file"
    )
    with pytest.raises(NotebookError) as no_cells:
        read_notebook_bytes(path, b'{"cells": "none"}')
    assert str(no_cells.value) == "dir/x.ipynb is not a notebook: it has no list of cells"
    with pytest.raises(NotebookError) as old:
        read_notebook_bytes(path, b'{"cells": [], "nbformat": "4"}')
    assert str(old.value) == (
        "dir/x.ipynb has nbformat '4', batcat needs nbformat 4: "
        "convert it with `jupyter nbconvert --to notebook --nbformat 4 dir/x.ipynb`"
    )
    notebook = read_notebook_bytes(path, b'{"cells": [], "nbformat": 4}')  # a git blob: no file
    assert (notebook.path, notebook.content, notebook.raw) == (
        path,
        {"cells": [], "nbformat": 4},
        notebook.raw,
    )


def test_kernel_names_are_the_ones_jupyter_starts():
    assert kernel_alias("python") == "python3" and kernel_alias("Python") == "python3"
    assert kernel_alias("IR") == "ir" and kernel_alias("python3") == "python3"


def test_lines_that_are_not_python_are_skipped_and_named():
    source = "%matplotlib inline\n# the rate\nx = 1\n!pip install y\ny = 'a'  # a name\n"
    found, skipped = read_parameters(source)
    assert found == [Parameter("x", "int", "1", "the rate"), Parameter("y", "str", "'a'", "a name")]
    assert skipped == [(1, "%matplotlib inline"), (4, "!pip install y")]
    with pytest.raises(NotebookError) as refused:
        parse_parameters(source)
    assert str(refused.value) == (
        "the parameters cell is not valid Python: line 1 '%matplotlib inline'; "
        "keep only assignments there (move magics and other code to the next cell)"
    )
    assert read_parameters("x = 1\n  y = 2\n# z\nz = 3") == (
        [Parameter("x", "int", "1"), Parameter("z", "int", "3", "z")],
        [(2, "  y = 2")],
    )


def test_a_cell_that_cannot_be_read_at_all_gives_up_naming_the_problem():
    assert read_parameters("def f():") == ([], [(1, "def f():")])  # the line is skipped, then empty
    assert read_parameters("x = 1\ny = (") == ([Parameter("x", "int", "1")], [(2, "y = (")])
    found, skipped = read_parameters("x = (1,\n\n")
    assert found == [] and skipped == [(1, "x = (1,")]
    found, skipped = read_parameters("a = 1\n\x00")  # no line to blame: nothing is read
    assert found == [] and skipped == [(0, "source code string cannot contain null bytes")]


def test_annotations_name_the_type_and_whether_none_is_allowed():
    source = (
        "a: 'int' = 1\nb: Optional[int] = None\nc: int | str = 1\nd: None = None\n"
        "e: Optional[int | str] = 1\nf: str|None = 'x'\ng: float = 1\nh: list[int] = []\n"
        "i: Optional[dict[str, int]] = None\n"
    )
    assert [(p.name, p.type_name, p.optional) for p in parse_parameters(source)] == [
        ("a", "'int'", False),
        ("b", "int", True),
        ("c", "int|str", False),
        ("d", "None", True),
        ("e", "Optional[int|str]", True),
        ("f", "str", True),
        ("g", "float", False),
        ("h", "list[int]", False),  # its closing bracket kept
        ("i", "dict[str,int]", True),
    ]


def test_defaults_that_are_not_literals_have_no_type_and_the_last_assignment_wins():
    source = "a = f()\nb = [1, 2]\nc = 'x'\nc = 2\nd = 1e400 * 0 if False else 1\ne = {1}\nf = {[1]: 2}\n"
    assert [(p.name, p.type_name, p.default, p.optional) for p in parse_parameters(source)] == [
        ("a", "", "f()", False),
        ("b", "list", "[1, 2]", False),
        ("c", "int", "2", False),
        ("d", "", "1e400 * 0 if False else 1", False),
        ("e", "", "{1}", False),  # a set: no type a value given with -p can have
        ("f", "", "{[1]: 2}", False),  # literal_eval raises TypeError
    ]
    assert parse_parameters("x.y = 1\nz[0] = 2\nw = 1  #\n") == [Parameter("w", "int", "1")]


def test_help_comes_from_the_line_itself_else_the_comment_line_above():
    source = (
        "# Xs first\na = 1\nb = 2\n   #   indented   \nc = 3  # X own\n# above\n\nd = 4\n"
        "e = [\n  1,\n]  # last line\n"
    )
    assert [(p.name, p.help) for p in parse_parameters(source)] == [
        ("a", "Xs first"),
        ("b", ""),
        ("c", "X own"),
        ("d", ""),  # a blank line between: not its help
        ("e", "last line"),  # a statement over lines: the comment ending it
    ]
    assert parse_parameters("a = 1\n# not a's: the cell's last line") == [Parameter("a", "int", "1")]
    assert [(p.name, p.help) for p in parse_parameters("#\nx = 1\ny = '#no'\n")] == [("x", ""), ("y", "")]


def test_the_parameters_cell_is_found_by_its_tag_whatever_its_source_holds(tmp_path):
    cells = [
        {"cell_type": "markdown", "source": "x"},  # no metadata at all
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}},
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "later = 1"},
    ]
    (tmp_path / "nb.ipynb").write_text(json.dumps({"cells": cells, "nbformat": 4}))
    notebook = load_notebook(tmp_path / "nb.ipynb")
    assert notebook.parameters_cell() is notebook.content["cells"][1]  # the first tagged cell
    assert notebook.parameters() == [] and notebook.readable_parameters() == ([], [])
    cells[1]["source"] = ["%load_ext x\n", "a = 1\n", "b = 2"]
    (tmp_path / "nb.ipynb").write_text(json.dumps({"cells": cells, "nbformat": 4}))
    notebook = load_notebook(tmp_path / "nb.ipynb")
    assert notebook.readable_parameters() == (
        [Parameter("a", "int", "1"), Parameter("b", "int", "2")],
        [(1, "%load_ext x")],
    )
    (tmp_path / "none.ipynb").write_text(json.dumps({"cells": cells[:1], "nbformat": 4}))
    bare = load_notebook(tmp_path / "none.ipynb")
    assert bare.parameters_cell() is None and bare.readable_parameters() is None
