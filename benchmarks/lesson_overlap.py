"""How much of each exercise's answer its own lessons already show: for every function or class the solution
defines, the closest function or class in the module's two lessons, by difflib's ratio on the normalised source
(names, docstrings and comments dropped). 1.00 is the same code; issue 14 asks that an exercise transfer the idea to
a function, model or shape the lesson does not show.

    python benchmarks/lesson_overlap.py [--above 0.6]
"""
import argparse
import ast
import difflib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from autograder import load_course  # noqa: E402


def definitions(path: Path, answers_only: bool = False) -> list[tuple[str, str]]:
    """(name, normalised source) of every top-level def and class in a notebook's code cells."""
    found = []
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or (answers_only and "BEGIN SOLUTION" not in source):
            continue
        try:  # IPython magics and shell lines are not Python
            python = (line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
            tree = ast.parse("\n".join(python))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                name, node.name = node.name, "f"
                body = node.body
                if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    node.body = body[1:]  # the docstring
                found.append((name, ast.unparse(node)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--above", type=float, default=0.6)
    args = parser.parse_args()
    print("| module | solution's | closest in the lessons | similarity |\n|---|---|---|---:|")
    for module in load_course(ROOT).modules:
        shown = [d for path in module.lessons.values() for d in definitions(path)]
        for name, source in definitions(module.solution, answers_only=True):
            ratio, closest = max(((difflib.SequenceMatcher(None, source, s).ratio(), n) for n, s in shown),
                                 default=(0.0, "-"))
            if ratio > args.above:
                print(f"| {module.id} | `{name}` | `{closest}` | {ratio:.2f} |")


if __name__ == "__main__":
    main()
