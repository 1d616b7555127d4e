"""Grader code is real code (issue 12): the checks in autograder/exercises hold no Python source in strings (it
lives in autograder/worker, imported under its own names), and they import only the public spec API."""
import ast

import pytest

from conftest import ROOT

SPECS = sorted((ROOT / "autograder" / "exercises").glob("*.py"))


def code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants that parse as Python holding a def, class, import or loop: code kept as text."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and "\n" in node.value:
            try:
                parsed = ast.parse(node.value)
            except SyntaxError:
                continue
            if any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.For, ast.While))
                   for n in ast.walk(parsed)):
                found.append((node.lineno, node.value.strip().splitlines()[0]))
    return found


def test_the_detector_finds_code_in_a_string():
    assert code_strings(ast.parse("HELPERS = '''\nimport torch\ndef f():\n    return 1\n'''\n"))
    assert not code_strings(ast.parse('"""A docstring:\n\n    def example(): ...\n"""\nx = "two\\nlines"\n'))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_a_spec_holds_no_python_source_in_strings(path):
    found = code_strings(ast.parse(path.read_text()))
    assert not found, f"{path.name}: code in strings at {found}"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_a_spec_imports_only_the_public_api(path):
    private = [f"line {node.lineno}: {node.module}" for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autograder._")]
    assert not private, f"{path.name} imports private modules: {private}; use autograder.spec"
