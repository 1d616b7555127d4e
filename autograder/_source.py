"""Turning a notebook (or what a kernel has run) into the cells a worker executes.

Two things are removed, statement by statement: calls to `check(...)` (the grader must not recurse into
itself) and IPython magics or shell escapes (a plain Python worker cannot run them). Whole cells whose first
line is `# clash-report` are left out too: a report's benchmarks and plots grade nothing, and would run in both
workers. A comment, not cell metadata, so that the cells a kernel has run are recognised as well.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

REPORT_MARK = "# clash-report"
_FRAMEWORK_NAMES = {
    "torch": {"torch", "nn", "F"},
    "tensorflow": {"tensorflow", "tf", "keras"},
}


class NotebookError(ValueError):
    """A notebook that cannot be read; the message names the file and the problem in one line."""


def _transform_magics(source: str) -> str:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # no IPython: magics stay as they are and fail as syntax errors in that cell
        return source
    return TransformerManager().transform_cell(source)


def _is_dropped(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.Expr) or not isinstance(stmt.value, ast.Call):
        return False
    func = stmt.value.func
    # check(...) / autograder.check(...); get_ipython().run_line_magic(...) and friends
    while isinstance(func, ast.Attribute):
        if func.attr == "check" and isinstance(func.value, ast.Name) and func.value.id == "autograder":
            return True
        func = func.value
    if isinstance(func, ast.Call):
        func = func.func
    return isinstance(func, ast.Name) and func.id in ("check", "get_ipython")


def clean(source: str) -> str:
    """The cell's code without check calls and magics; a cell that does not parse is kept as it is,
    so the worker reports its SyntaxError against the right cell."""
    source = _transform_magics(source)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    kept = [s for s in tree.body if not _is_dropped(s)]
    if len(kept) == len(tree.body):
        return source
    return "\n".join(ast.unparse(s) for s in kept)


def frameworks_of(source: str) -> set[str]:
    """Which frameworks a cell touches, by the names it uses: lets `--framework torch` skip TF cells."""
    try:
        nodes = list(ast.walk(ast.parse(source)))
    except SyntaxError:
        return set()
    names = {n.id for n in nodes if isinstance(n, ast.Name)}
    names |= {a.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom) and n.module}
    return {fw for fw, fw_names in _FRAMEWORK_NAMES.items() if names & fw_names}


def cells_for(sources: list[tuple[str, str]], frameworks: list[str]) -> list[dict]:
    """[(label, source)] -> the worker's cells, keeping those whose frameworks are all being checked."""
    cells = []
    for label, source in sources:
        code = clean(source)
        if not code.strip() or code.lstrip().startswith(REPORT_MARK) or not frameworks_of(code) <= set(frameworks):
            continue
        cells.append({"label": label, "source": code})
    return cells


def notebook_sources(path: Path) -> list[tuple[str, str]]:
    """The code cells of a notebook file, labelled 'cell N' by their position among all cells."""
    path = Path(path)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        raise NotebookError(f"{path}: no such notebook") from None
    except (OSError, UnicodeDecodeError) as e:
        raise NotebookError(f"{path}: cannot read it ({e.__class__.__name__})") from None
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise NotebookError(f"{path}: not valid notebook JSON ({e})") from None
    if not isinstance(data, dict) or data.get("nbformat") != 4:
        got = data.get("nbformat") if isinstance(data, dict) else type(data).__name__
        raise NotebookError(f"{path}: expected a notebook of nbformat 4, got nbformat {got}")
    cells = data.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise NotebookError(f"{path}: malformed notebook (no list of cells)")
    sources = []
    for i, cell in enumerate(cells, 1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(line, str) for line in source):
            source = "".join(source)
        if not isinstance(source, str):
            raise NotebookError(f"{path}: cell {i} has a malformed source")
        sources.append((f"cell {i}", source))
    return sources


def answer_cells(path: Path) -> set[str]:
    """The nbgrader grade ids of a notebook's answer cells (`solution: true`): which exercise it holds. Empty for a
    notebook without nbgrader metadata or one that cannot be read (notebook_sources says why)."""
    try:
        cells = json.loads(Path(path).read_text()).get("cells", [])
        return {c["metadata"]["nbgrader"]["grade_id"] for c in cells
                if isinstance(c, dict) and c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return set()

