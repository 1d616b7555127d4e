"""Lessons 05-08 run headless (see tests/lesson_runs.py)."""
from lesson_runs import headless_test_for

test_lessons_run_headless_without_errors_or_stderr_and_twins_agree = headless_test_for("later")
