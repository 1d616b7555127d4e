"""Text the notebooks state that comes from the registry, never typed by hand: each exercise's limits cell.

A solution notebook holds one markdown cell whose metadata is {"clash": {"generated": "limits"}}, right after its
title cell; `python -m autograder._stated` rewrites it from `course.toml` (then `nbgrader generate_assignment <id>
--force` carries it into exercises/). tests/test_stated.py fails when a notebook's cell differs from what this
module generates, so a limit changed in the registry cannot leave a stale number in front of students.
"""
from __future__ import annotations

import json
import sys

from autograder._registry import Course, Module, load_course

KEY = "limits"


def limits_text(course: Course, module: Module) -> str:
    """The limits a student's code can hit in this exercise, as the grader applies them."""
    lim = course.limits
    compiling = [p.id for p in module.exercise.parts if p.compiles]
    compile_line = (f"; in {_names(compiling)}, which may compile (`torch.compile`, XLA), the first call of each "
                    f"function may take up to {lim.compile_timeout_s:g} s" if compiling else "")
    return (
        "**Limits.** Each check runs your notebook's code in a fresh process with these limits (from the course's\n"
        "`course.toml`; a part that hits one fails with a message naming it, and the other parts are still graded):\n"
        "\n"
        f"- importing the frameworks and running your cells: {lim.startup_timeout_s:g} s;\n"
        f"- one call of one of your functions: {lim.call_timeout_s:g} s{compile_line};\n"
        f"- memory: {lim.memory_mb:g} MB; printed output: {lim.output_kb:g} KB."
    )


def _names(ids: list[str]) -> str:
    quoted = [f"`{i}`" for i in ids]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def generated_cell(nb: dict) -> dict | None:
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("clash", {}).get("generated") == KEY:
            return cell
    return None


def sync(course: Course, module: Module) -> bool:
    """Write the module's limits cell into its solution notebook (inserting it after the first cell); True when the
    notebook changed."""
    path = module.solution
    nb = json.loads(path.read_text())
    text = limits_text(course, module)
    cell = generated_cell(nb)
    if cell is not None and "".join(cell["source"]) == text:
        return False
    if cell is None:
        cell = {"cell_type": "markdown", "id": "clash-limits", "metadata": {"clash": {"generated": KEY}}, "source": ""}
        nb["cells"].insert(1, cell)
    cell["source"] = text.splitlines(True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def main() -> None:
    course = load_course()
    changed = [m.id for m in course.modules if sync(course, m)]
    print(f"rewrote the limits cell of {', '.join(changed)}; now run `nbgrader generate_assignment <id> --force`"
          if changed else "every limits cell is up to date")
    sys.exit(0)


if __name__ == "__main__":
    main()
