"""Lesson 09 runs headless: each twin runs the showdown (see tests/lesson_runs.py)."""
from lesson_runs import headless_test_for

test_lessons_run_headless_without_errors_or_stderr_and_twins_agree = headless_test_for("capstone")
