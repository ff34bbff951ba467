#!/usr/bin/env python3
"""Check batcat_nb's import structure: no import cycles, and heavy SDKs only in their backend.

Every ``import``/``from ... import`` of a batcat_nb module counts, lazy ones inside functions
too (they tie modules together just the same), except those under ``if TYPE_CHECKING:``.
Exit 1, listing each problem, when a cycle exists or a module imports an SDK outside its folder.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "batcat_nb"
# SDK -> the only folder of batcat_nb that may import it
CONFINED = {"docker": "batcat_nb.backends.docker", "boto3": "batcat_nb.backends.sagemaker"}
# s3:// channels of local and Docker runs; secrets a SageMaker job reads with its role
STORAGE_EXCEPTION = {"boto3": {"batcat_nb.storage", "batcat_nb.secrets"}}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: Path, name: str, modules: set[str]) -> tuple[set[str], set[str]]:
    """(batcat_nb modules imported, top-level third-party packages imported) by one file."""
    tree = ast.parse(path.read_text(), str(path))
    skip = type_checking_lines(tree)
    package = name if is_package(path) else name.rpartition(".")[0]
    found, external = set(), set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                (found if alias.name.startswith(PACKAGE) else external).add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith(PACKAGE):
                external.add(target)
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    found = {m for m in found if m in modules and m != name}
    return found, {e.split(".")[0] for e in external}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def main() -> int:
    root = Path(__file__).resolve().parent.parent / PACKAGE
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    problems: list[str] = []
    for name, path in sorted(files.items()):
        graph[name], external = imports(path, name, set(files))
        for sdk, home in CONFINED.items():
            allowed = name.startswith(home) or name in STORAGE_EXCEPTION.get(sdk, set())
            if sdk in external and not allowed:
                problems.append(f"{name} imports {sdk}: only {home} may")
    # A package's __init__ importing its own submodules is not a cycle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".") or not is_package(files[name])}
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in find_cycles(graph)]
    for problem in problems:
        print(problem)
    print(f"{len(files)} modules: {'no problems' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
