import json

import pytest

from autograder._progress import exercise_status, load_progress, progress_path, record
from autograder._result import CheckResult, PartResult


@pytest.fixture(autouse=True)
def progress_in_the_working_copy(monkeypatch):
    """These tests are about the file in the working copy (tmp_path), not the suite-wide override."""
    monkeypatch.delenv("CLASH_PROGRESS_DIR", raising=False)


def result(statuses):
    parts = [PartResult(id=pid, title=pid, status=s, points=1.0 if s == "passed" else 0.0, max_points=1.0,
                        message="", hint="", framework="torch", kind="equivalence") for pid, s in statuses.items()]
    return CheckResult(exercise="01_tensors", title="t", parts=parts, device="cpu")


def test_progress_keeps_each_parts_best_status(tmp_path, course):
    record(tmp_path, result({"torch_grad": "passed", "tf_grad": "failed"}))
    record(tmp_path, result({"torch_grad": "failed", "tf_grad": "passed"}))
    entry = load_progress(tmp_path)["01_tensors"]
    assert entry["parts"] == {"torch_grad": "passed", "tf_grad": "passed"}
    status, points = exercise_status(entry, course.module("01_tensors").exercise)
    assert status == "started" and points == 4


def test_a_write_leaves_no_temporary_files(tmp_path):
    record(tmp_path, result({"torch_grad": "passed"}))
    assert sorted(p.name for p in progress_path(tmp_path).parent.iterdir()) == ["progress.json"]
    json.loads(progress_path(tmp_path).read_text())


def test_an_unreadable_progress_file_is_kept_aside_not_lost(tmp_path):
    path = progress_path(tmp_path)
    path.parent.mkdir()
    path.write_text('{"version": 1, "exercises": {"01_ten')  # a crash mid-write by some other tool
    assert load_progress(tmp_path) == {}
    aside = [p for p in path.parent.iterdir() if "unreadable" in p.name]
    assert len(aside) == 1 and aside[0].read_text().startswith('{"version"')
