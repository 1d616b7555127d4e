"""The student's progress: a small JSON file in their working copy that survives a crash mid-write."""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from autograder._result import CheckResult

PROGRESS_FILE = Path(".clash") / "progress.json"


def progress_path(root: Path) -> Path:
    """In the student's working copy; CLASH_PROGRESS_DIR moves it (tests, shared installs)."""
    if os.environ.get("CLASH_PROGRESS_DIR"):
        return Path(os.environ["CLASH_PROGRESS_DIR"]) / PROGRESS_FILE.name
    return Path(root) / PROGRESS_FILE


def load_progress(root: Path) -> dict:
    """{exercise id: {"parts": {part id: status}, "score", "max_score", "passed", "device", "checked_at"}}.

    A file that cannot be read is moved aside (never deleted) and progress starts afresh.
    """
    return _load(root)["exercises"]


def _load(root: Path) -> dict:
    """The whole file: {"version", "exercises", "hints": {EXERCISE.PART: the hint level shown so far}}."""
    path = progress_path(root)
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("exercises"), dict):
            data.setdefault("hints", {})
            return data
        raise ValueError("unexpected layout")
    except FileNotFoundError:
        return {"version": 1, "exercises": {}, "hints": {}}
    except (ValueError, OSError):
        aside = path.with_suffix(f".unreadable-{int(time.time())}.json")
        os.replace(path, aside)
        return {"version": 1, "exercises": {}, "hints": {}}


def next_hint_level(root: Path, key: str) -> int:
    """Ask for the hint of part `key` (EXERCISE.PART): 1 the first time (the concept), 2 from then on (the API)."""
    data = _load(root)
    level = min(2, int(data["hints"].get(key, 0)) + 1)
    data["hints"][key] = level
    _write_atomically(progress_path(root), json.dumps(data, indent=1))
    return level


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".progress-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record(root: Path, result: CheckResult) -> None:
    """Merge a result into the progress file; a part keeps its best status so far."""
    data = _load(root)
    entry = data["exercises"].setdefault(result.exercise, {"parts": {}})
    for part in result.parts:
        if part.status != "skipped" and entry["parts"].get(part.id) != "passed":
            entry["parts"][part.id] = part.status
    entry.update(device=result.device, checked_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    _write_atomically(progress_path(root), json.dumps(data, indent=1))


def exercise_status(entry: dict | None, exercise) -> tuple[str, float]:
    """("done" | "started" | "not started", points earned) for one registered exercise."""
    if not entry:
        return "not started", 0.0
    parts = entry.get("parts", {})
    points = sum(p.points for p in exercise.parts if parts.get(p.id) == "passed")
    done = all(parts.get(p.id) == "passed" for p in exercise.parts)
    return ("done" if done else "started"), points
