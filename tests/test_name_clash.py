"""No name a notebook defines can break the grader (issue 12): every module's solution, rewritten to import the
frameworks under other names (`import torch as th`, `import tensorflow as tf2`, NumPy as `onp`, `time` and
`statistics` under other names), then rebinding `torch`, `tf`, `np`, `time` and `statistics` to strings and defining
`_clash_*` names of its own, still scores full marks. Before the grader's worker code became modules, a 07 notebook
importing PyTorch as `th` scored 1/10 (the helpers, run in the notebook's namespace, read its `torch`)."""
import json
import re

import pytest

from autograder import load_course, run_check

from conftest import ROOT

pytestmark = pytest.mark.slow

# (the import statement, its aliased form, the name it bound, the alias)
ALIASES = [
    ("import torch", "import torch as th", "torch", "th"),
    ("import tensorflow as tf", "import tensorflow as tf2", "tf", "tf2"),
    ("import numpy as np", "import numpy as onp", "np", "onp"),
    ("import time", "import time as clock", "time", "clock"),
    ("import statistics", "import statistics as stats", "statistics", "stats"),
]

SHADOWS = '''
# The notebook's own meanings for names the grader's code uses.
torch = tf = np = time = statistics = "shadowed by the notebook"
_clash_DEV = _clash_np = _clash_STEPS = _clash_TF_STEPS = "shadowed by the notebook"

def _clash_port(*args, **kwargs):
    raise RuntimeError("the notebook's own _clash_port ran")

def _clash_benchmark(*args, **kwargs):
    raise RuntimeError("the notebook's own _clash_benchmark ran")
'''


def aliased(source: str) -> str:
    lines = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith(("import ", "from ")):
            for plain, alias, _, _ in ALIASES:
                if stripped == plain:
                    line = line.replace(plain, alias)
        else:
            for _, _, name, alias in ALIASES:
                line = re.sub(rf"(?<![\w.]){name}\.", f"{alias}.", line)
        lines.append(line)
    return "\n".join(lines)


def clashing_notebook(solution, dest):
    nb = json.loads(solution.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["source"] = aliased("".join(cell["source"]))
    nb["cells"].append({"cell_type": "code", "execution_count": None, "id": "shadows", "metadata": {},
                        "outputs": [], "source": SHADOWS})
    dest.write_text(json.dumps(nb, indent=1))
    return dest


def test_the_rewrite_aliases_what_it_should():
    source = "import torch\nimport numpy as np\nx = torch.zeros(3)\ny = np.ones(2)\nz = a.torch.b\ns = 'tf_xla'\n"
    assert aliased(source) == ("import torch as th\nimport numpy as onp\nx = th.zeros(3)\ny = onp.ones(2)\n"
                               "z = a.torch.b\ns = 'tf_xla'")


@pytest.mark.parametrize("module_id", [m.id for m in load_course(ROOT).modules])
def test_a_notebook_that_aliases_and_shadows_names_scores_full_marks(course, tmp_path, zygote, module_id):
    module = course.module(module_id)
    nb = clashing_notebook(module.solution, tmp_path / f"{module_id}.ipynb")
    result = run_check(module_id, notebook=nb, course=course, zygote=zygote)
    assert result.passed, [(p.id, p.message) for p in result.parts if not p.passed]
