"""A synthetic class for grading tests and benchmarks: a temporary course directory with submissions that are
correct, wrong, untouched, or attacks on the grader (the red team)."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "01_tensors"
SOLUTION_IDS = ("torch_loss_and_grad", "tf_loss_and_grad", "torch_fit", "tf_fit", "tf_loss_and_grad_graph")


def make_course(dest: Path, limits: str = "") -> Path:
    """Copy the course into `dest` (optionally with other [limits]) and fill its gradebook."""
    for name in ("solutions", "exercises", "nbgrader_config.py", "course.toml"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, dest / name)
    if limits:
        text = (dest / "course.toml").read_text()
        start = text.index("[limits]")
        end = text.index("[[module]]")
        (dest / "course.toml").write_text(text[:start] + "[limits]\n" + limits.strip() + "\n\n" + text[end:])
    run = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--force"],
                         cwd=dest, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return dest


def gradebook_scores(course: Path) -> dict[str, float]:
    """{student: total auto score}, straight from nbgrader's SQLite gradebook."""
    con = sqlite3.connect(course / "gradebook.db")
    try:
        return dict(con.execute("""
            select student.id, sum(grade.auto_score) from grade
            join submitted_notebook on grade.notebook_id = submitted_notebook.id
            join submitted_assignment on submitted_notebook.assignment_id = submitted_assignment.id
            join student on submitted_assignment.student_id = student.id group by student.id""").fetchall())
    finally:
        con.close()


def solved_sources() -> dict[str, str]:
    nb = json.loads((ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())
    # What a student who solved it would hand in: the code, without the instructor's markers.
    return {c["metadata"]["nbgrader"]["grade_id"]: "".join(line for line in c["source"] if "SOLUTION" not in line)
            for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") in SOLUTION_IDS}


def submit(course: Path, student: str, replacements: dict[str, str] | None = None, *, raw: str | None = None,
           name: str | None = None, edit=None) -> Path:
    """Write submitted/<student>/<assignment>/<name>: the released notebook with some cells replaced."""
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{ASSIGNMENT}.ipynb")
    if raw is not None:
        path.write_text(raw)
        return path
    nb = json.loads((course / "exercises" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())
    for cell in nb["cells"]:
        gid = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if replacements and gid in replacements:
            cell["source"] = replacements[gid]
    if edit:
        edit(nb)
    path.write_text(json.dumps(nb, indent=1))
    return path


def with_solution(**overrides: str) -> dict[str, str]:
    return {**solved_sources(), **overrides}


WRONG_TORCH = '''
def torch_loss_and_grad(w, x, y):
    w = w.detach().clone().requires_grad_(True)
    loss = ((x @ w - y) ** 2).sum()        # the sum, not the mean
    loss.backward()
    return loss.detach(), w.grad
'''


def _drop_cell(grade_id):
    return lambda nb: nb.update(cells=[c for c in nb["cells"]
                                       if c["metadata"].get("nbgrader", {}).get("grade_id") != grade_id])


def _duplicate_cell(grade_id):
    def edit(nb):
        i = next(i for i, c in enumerate(nb["cells"]) if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)
        nb["cells"].insert(i, json.loads(json.dumps(nb["cells"][i])) | {"id": "dup"})
    return edit


def _edit_locked(grade_id, source):
    def edit(nb):
        for c in nb["cells"]:
            if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id:
                c["source"] = source
    return edit


ESCAPED_MARKER = "600.4242"   # the argument of the sleep an escaping submission leaves behind
KILLS_ZYGOTE = """
import os, signal
for _pid in [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
    try:                                    # the zygote, the other workers, clash grade: all say autograder
        if b"autograder" in open(f"/proc/{_pid}/cmdline", "rb").read():
            os.kill(_pid, signal.SIGKILL)
    except OSError:
        pass
"""
STOPS_NEIGHBOURS = """
import os, signal, time
if os.fork() == 0:                          # a detached process that outlives this cell
    os.setsid()
    if os.fork() == 0:
        while True:                         # freeze every grader process it can see, forever
            for _pid in [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
                try:
                    if b"autograder" in open(f"/proc/{_pid}/cmdline", "rb").read():
                        os.kill(_pid, signal.SIGSTOP)
                except OSError:
                    pass
            time.sleep(0.05)
    os._exit(0)
os.wait()
"""
ESCAPES = f"""
import os
if os.fork() == 0:                          # double fork and setsid: re-parented away from the worker
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "{ESCAPED_MARKER}"])
    os._exit(0)
os.wait()
"""


# Each red-team entry: (what the student does, the parts it attacks (scored 0), expected reason or message part)
RED_TEAM = {
    "patch_compare": (with_solution(torch_loss_and_grad='''
import numpy as np
np.allclose = lambda *a, **k: True
np.testing.assert_allclose = lambda *a, **k: None
torch.allclose = lambda *a, **k: True
tf.debugging.assert_near = lambda *a, **k: None
def torch_loss_and_grad(w, x, y):
    return torch.zeros(()), torch.zeros_like(w)
'''), {"torch_grad", "cross_grad"}, "differ beyond"),
    "always_equal": (with_solution(tf_loss_and_grad='''
class AlwaysEqual:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
def tf_loss_and_grad(w, x, y):
    return AlwaysEqual(), AlwaysEqual()
'''), {"tf_grad", "cross_grad", "tf_graph", "graph_speed"}, "AlwaysEqual, expected a tf.Tensor"),
    "patch_clock": (with_solution(tf_loss_and_grad_graph='''
import time
time.perf_counter = lambda: 0.0
time.perf_counter_ns = lambda: 0
time.monotonic = lambda: 0.0
tf_loss_and_grad_graph = tf_loss_and_grad       # eager, hoping a patched clock makes it look fast
'''), {"tf_graph", "graph_speed"}, "not a tf.function"),
    "guessed_seed": (with_solution(torch_fit='''
import numpy as np
_rng = np.random.default_rng(0)                  # answers for the inputs seed 0 would draw
_guess = torch.tensor(_rng.normal(size=5).astype("float32"))
def torch_fit(w0, x, y, lr, steps):
    return _guess[: w0.shape[0]]
'''), {"same_weights"}, "is off|differ beyond|shape"),
    "memoised": (with_solution(tf_fit='''
_memo = {}
def tf_fit(w0, x, y, lr, steps):
    if "w" not in _memo:
        w = tf.Variable(w0)
        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.linalg.matvec(x, w) - y))
            w.assign_sub(lr * tape.gradient(loss, w))
        _memo["w"] = tf.convert_to_tensor(w)
    return _memo["w"]
'''), {"same_weights"}, "is off|differ beyond|shape"),
    "reads_solutions": (with_solution(torch_loss_and_grad='''
import json, os
_root = os.readlink(f"/proc/{os.getppid()}/cwd")   # the grader runs in the course folder
_cells = json.load(open(os.path.join(_root, "solutions", "01_tensors", "01_tensors.ipynb")))["cells"]
exec("".join(_cells[5]["source"]))
'''), {"torch_grad", "cross_grad"}, "PermissionError|not defined"),
    "writes_gradebook": (with_solution(tf_fit=solved_sources()["tf_fit"] + '''
import os
_root = os.readlink(f"/proc/{os.getppid()}/cwd")
try:
    open(os.path.join(_root, "gradebook.db"), "r+b").write(b"pwned")
except OSError:
    pass
'''), set(), ""),
    "edits_locked_cell": (with_solution(torch_loss_and_grad=WRONG_TORCH), {"torch_grad", "cross_grad"},
                          "differ beyond"),
    "deletes_grade_cell": (with_solution(), {"tf_grad"}, "grade cell test_tf_grad was deleted"),
    "duplicates_grade_cell": (with_solution(), set(), "grade cell test_torch_grad appears 2 times"),
    "custom_exc": (with_solution(torch_loss_and_grad='''
get_ipython().set_custom_exc((Exception,), lambda *a, **k: None)
''' + WRONG_TORCH), {"torch_grad", "cross_grad"}, "differ beyond"),
    "sys_exit": (with_solution(torch_loss_and_grad="import sys\nsys.exit(0)\n"
                               + solved_sources()["torch_loss_and_grad"]),
                 {"torch_grad", "cross_grad"}, "SystemExit|not defined"),
    "os_exit": (with_solution(tf_fit="import os\nos._exit(0)\n"), "all", "exited with status 0"),
    "infinite_loop": (with_solution(torch_fit="while True:\n    pass\n"), "all", "took longer than"),
    "ignores_sigint": (with_solution(torch_fit="import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                     "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n"),
                       "all", "took longer than"),
    "memory_bomb": (with_solution(torch_fit="_hoard = []\nwhile True:\n    _hoard.append(bytearray(64 * 2**20))\n"),
                    "all", "used more than|MemoryError"),
    "output_flood": (with_solution(torch_fit="while True:\n    print('x' * 10000)\n"), "all", "printed more than"),
    "segfault": (with_solution(torch_fit="import ctypes\nctypes.string_at(0)\n"), "all", "segmentation fault"),
    # Attacks on the class, each beside a correct answer: they must gain nothing and cost the others nothing.
    "kills_zygote": (with_solution(torch_fit=solved_sources()["torch_fit"] + KILLS_ZYGOTE), set(), ""),
    "stops_neighbours": (with_solution(torch_fit=solved_sources()["torch_fit"] + STOPS_NEIGHBOURS), set(), ""),
    "escapes": (with_solution(torch_fit=solved_sources()["torch_fit"] + ESCAPES), set(), ""),
    "malformed_json": (None, "all", "malformed notebook: .*not valid notebook JSON"),
    "nbformat3": (None, "all", "nbformat 3"),
    "renamed": (with_solution(), "all", "renamed notebook: found solution.ipynb"),
}


def submit_red_team(course: Path, name: str) -> None:
    replacements = RED_TEAM[name][0]
    if name == "malformed_json":
        submit(course, name, raw='{"cells": [')
    elif name == "nbformat3":
        submit(course, name, raw=json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}}))
    elif name == "renamed":
        submit(course, name, replacements, name="solution.ipynb")
    elif name == "edits_locked_cell":
        submit(course, name, replacements, edit=_edit_locked("test_torch_grad", "print('all good')"))
    elif name == "deletes_grade_cell":
        submit(course, name, replacements, edit=_drop_cell("test_tf_grad"))
    elif name == "duplicates_grade_cell":
        submit(course, name, replacements, edit=_duplicate_cell("test_torch_grad"))
    else:
        submit(course, name, replacements)
