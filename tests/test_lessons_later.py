"""Lessons 05-08 run headless (see tests/lesson_runs.py)."""
import pytest
from lesson_runs import HEADLESS_GROUPS, check_lesson_pair

from conftest import ROOT


def modules():
    from autograder import load_course
    return [m for m in load_course(ROOT).modules if m.id in HEADLESS_GROUPS["later"]]


@pytest.mark.slow
@pytest.mark.parametrize("module", modules(), ids=lambda m: m.id)
def test_lessons_run_headless_without_errors_or_stderr_and_twins_agree(module):
    check_lesson_pair(module)
