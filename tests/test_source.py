import json

import pytest

from autograder._source import NotebookError, cells_for, clean, frameworks_of, notebook_sources


def test_check_calls_and_magics_are_removed_but_code_is_kept():
    src = "%matplotlib inline\nimport numpy as np\ncheck('01_tensors.tf_grad')\nx = 1\n!ls\nautograder.check('a')"
    out = clean(src)
    assert "check" not in out and "ls" not in out and "matplotlib" not in out
    assert "import numpy as np" in out and "x = 1" in out


def test_a_cell_that_does_not_parse_is_kept_for_its_error():
    assert clean("def f(:\n  pass").strip() == "def f(:\n  pass"


def test_frameworks_are_read_from_the_names_a_cell_uses():
    assert frameworks_of("import torch") == {"torch"}
    assert frameworks_of("import tensorflow as tf") == {"tensorflow"}
    assert frameworks_of("def f(w):\n    return tf.square(w) + torch.ones(1)") == {"torch", "tensorflow"}
    assert frameworks_of("import numpy as np") == set()


def test_one_framework_skips_the_other_frameworks_cells():
    cells = cells_for([("cell 1", "import torch"), ("cell 2", "import tensorflow as tf"), ("cell 3", "x = 1")],
                      ["torch"])
    assert [c["label"] for c in cells] == ["cell 1", "cell 3"]


def test_unreadable_notebooks_give_one_line_naming_the_file(tmp_path):
    with pytest.raises(NotebookError, match="nope.ipynb: no such notebook"):
        notebook_sources(tmp_path / "nope.ipynb")
    bad = tmp_path / "bad.ipynb"
    bad.write_text('{"cells": [')
    with pytest.raises(NotebookError, match="bad.ipynb: not valid notebook JSON"):
        notebook_sources(bad)
    old = tmp_path / "old.ipynb"
    old.write_text(json.dumps({"nbformat": 3, "worksheets": []}))
    with pytest.raises(NotebookError, match="expected a notebook of nbformat 4, got nbformat 3"):
        notebook_sources(old)
    odd = tmp_path / "odd.ipynb"
    odd.write_text(json.dumps({"nbformat": 4, "cells": [{"cell_type": "code", "source": 5}]}))
    with pytest.raises(NotebookError, match="cell 1 has a malformed source"):
        notebook_sources(odd)


def test_report_cells_are_left_out_whether_from_a_file_or_a_kernel():
    sources = [("cell 1", "def f():\n    return 1"), ("cell 3", "# clash-report: the benchmark, not graded\nrun_all()"),
               ("In [4]", "  # clash-report\nplot()"), ("cell 5", "g = 2  # clash-report is only a marker on line 1")]
    assert [c["label"] for c in cells_for(sources, ["torch"])] == ["cell 1", "cell 5"]
