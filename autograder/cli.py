"""`clash`: the course in a terminal. A thin layer over the library; every command has --help."""
from __future__ import annotations

import json
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import click

from autograder._checker import DEVICES, FRAMEWORK_CHOICES, CheckError, run_check
from autograder._progress import exercise_status, load_progress, next_hint_level, progress_path, record
from autograder._registry import Course, RegistryError, load_course
from autograder._source import NotebookError

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _course() -> Course:
    try:
        return load_course()
    except RegistryError as e:
        _die(str(e))


def _die(message: str) -> None:
    click.echo(f"clash: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _next_exercise(course: Course, progress: dict):
    for module in course.modules:
        if exercise_status(progress.get(module.id), module.exercise)[0] != "done":
            return module
    return None


def _rel(path: Path, course: Course) -> str:
    try:
        return str(path.relative_to(course.root))
    except ValueError:
        return str(path)


def _stop_like_ctrl_c(signum, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _handle_termination() -> None:
    """SIGTERM (a `kill`, a job scheduler) and SIGHUP (a closed terminal) end a check or a grading run as Ctrl-C
    does: its workers are closed and finished grades kept. (Were this process killed outright, its workers still
    die with it: they carry a parent-death signal.)"""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_like_ctrl_c)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clash-of-frameworks", prog_name="clash")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Clash of Frameworks: PyTorch and TensorFlow side by side.

    With no command, shows the course map: every module, your progress, and what to do next.
    """
    _handle_termination()
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    course = _course()
    progress = load_progress(course.root)
    table = Table(title=course.title, title_justify="left")
    for col in ("module", "exercise", "status", "points"):
        table.add_column(col, overflow="fold")
    for m in course.modules:
        status, points = exercise_status(progress.get(m.id), m.exercise)
        table.add_row(f"{m.id}: {m.title}", m.exercise.title, status, f"{points:g}/{m.exercise.max_score:g}")
    console = Console()
    console.print(table)
    nxt = _next_exercise(course, progress)
    if nxt is None:
        console.print("Every exercise is done. Well played.")
        return
    console.print(f"Next: {nxt.id}, {nxt.title}")
    console.print(f"  1. read   {_rel(nxt.lessons['torch'], course)}")
    console.print(f"           {_rel(nxt.lessons['tensorflow'], course)}")
    console.print(f"  2. solve  {_rel(nxt.exercise_notebook, course)}   (JupyterLab, or any Jupyter)")
    console.print(f"  3. check  clash check {nxt.id}      (clash hint {nxt.id} when stuck)")


@main.command()
@click.argument("directory", required=False, default="clash-of-frameworks", type=click.Path(path_type=Path))
def init(directory: Path) -> None:
    """Make a working copy of the course in DIRECTORY (default: ./clash-of-frameworks): lessons and exercises."""
    from autograder._init import init_course
    try:
        written = init_course(directory)
    except (FileExistsError, RegistryError) as e:
        _die(str(e))
    click.echo(f"Wrote {len(written)} files to {directory}: the course map (course.ipynb), the lessons and the "
               f"exercises.\nNext: cd {directory} && clash")


@main.command("list")
def list_() -> None:
    """List the exercises with their status and points."""
    course = _course()
    progress = load_progress(course.root)
    for m in course.modules:
        status, points = exercise_status(progress.get(m.id), m.exercise)
        click.echo(f"{m.id:<16} {status:<12} {points:g}/{m.exercise.max_score:g}  {m.exercise.title}")


@main.command()
@click.argument("exercise", required=False)
@click.option("--notebook", type=click.Path(dir_okay=False, path_type=Path),
              help="The notebook to check (default: the exercise's notebook under exercises/).")
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where to run: CUDA when present (auto), or force one.")
@click.option("--framework", type=click.Choice(FRAMEWORK_CHOICES), default="both", show_default=True,
              help="Check one framework's side only (e.g. where only one has a GPU build).")
def check(exercise, notebook, as_json, device, framework) -> None:
    """Check an exercise (default: the first unfinished one); exit 0 when every part passes, 1 when one
    fails, 2 on bad usage or unreadable input."""
    course = _course()
    if exercise is None:
        nxt = _next_exercise(course, load_progress(course.root))
        if nxt is None:
            click.echo("Every exercise is done; name one to check it again.")
            return
        exercise = nxt.id
    try:
        result = run_check(exercise, notebook=notebook, device=device, framework=framework, course=course)
    except (RegistryError, NotebookError, CheckError) as e:
        if as_json:
            click.echo(json.dumps({"error": str(e)}))
        _die(str(e))
    own = course.module(result.exercise).exercise_notebook
    if notebook is None or Path(notebook).resolve() == own:  # progress follows the student's own notebook only
        record(course.root, result)
        recorded = True
        note = f"Progress recorded in {_shown(progress_path(course.root))}."
    else:
        recorded = False
        note = (f"Progress not recorded: {_shown(Path(notebook))} is not {_shown(own)}, the notebook "
                f"`clash progress` follows.")
    if as_json:   # one JSON document: the result, and where its progress went
        payload = json.loads(result.to_json())
        payload["progress"] = {"recorded": recorded, "note": note}
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(result.summary())
        click.echo(note)
    sys.exit(EXIT_PASSED if result.passed else EXIT_FAILED)


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the current folder where it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@main.command()
@click.argument("target")
@click.option("--api", is_flag=True, help="Name the API at once, skipping the concept.")
def hint(target, api) -> None:
    """Hints for an exercise's parts, or for one part (EXERCISE.PART), in two levels: the first time, the idea
    behind the part; asked again (or with --api), the API that does it."""
    course = _course()
    try:
        module, part_ids = course.resolve(target)
    except RegistryError as e:
        _die(str(e))
    status = load_progress(course.root).get(module.id, {}).get("parts", {})
    for pid in part_ids:
        part = module.exercise.part(pid)
        key = f"{module.id}.{pid}"
        level = 2 if api or not part.concept else next_hint_level(course.root, key)
        mark = "✓" if status.get(pid) == "passed" else "•"
        text = part.hint if level == 2 else f"{part.concept}\n    (ask again, `clash hint {key}`, for the API)"
        click.echo(f"{mark} {key} — {part.title}\n    {text}")


@main.command()
def progress() -> None:
    """Draw a progress bar over the whole course."""
    from rich.console import Console
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    course = _course()
    records = load_progress(course.root)
    total = sum(m.exercise.max_score for m in course.modules)
    states = [exercise_status(records.get(m.id), m.exercise) for m in course.modules]
    earned, done = sum(p for _, p in states), sum(s == "done" for s, _ in states)
    row = Table.grid(padding=(0, 1))
    row.add_row(f"{done}/{len(course.modules)} exercises", ProgressBar(total=total, completed=earned, width=40),
                f"{earned:g}/{total:g} points ({100 * earned / total:.0f}%)")
    Console().print(row)


@main.command()
@click.argument("exercise", required=False)
@click.option("--notebook", type=click.Path(dir_okay=False, path_type=Path), help="The notebook to watch.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--framework", type=click.Choice(FRAMEWORK_CHOICES), default="both", show_default=True)
def watch(exercise, notebook, device, framework) -> None:
    """Check an exercise, then check it again every time its notebook is saved (Ctrl-C stops)."""
    from watchfiles import watch as watch_files

    course = _course()
    module = course.module(exercise) if exercise else (_next_exercise(course, load_progress(course.root))
                                                       or course.modules[0])
    path = Path(notebook) if notebook else module.exercise_notebook
    if not path.is_file():
        _die(f"{path}: no such notebook")

    # One zygote for as long as the watch runs: the frameworks are imported once, and every re-check forks its
    # workers from it (each still jailed, with fresh state), so a re-check costs the checking, not the imports.
    from autograder._sandbox import worker_env
    from autograder._zygote import Zygote
    frameworks = ["torch", "tensorflow"] if framework == "both" else [framework]
    warm: list[Zygote] = []

    def zygote() -> Zygote:
        if warm and warm[0].alive:
            return warm[0]
        if warm:
            warm.pop().close()
        warm.append(Zygote(frameworks, worker_env(device)))
        return warm[0]

    def once() -> None:
        t0 = time.perf_counter()
        try:
            result = run_check(module.id, notebook=path, device=device, framework=framework, course=course,
                               zygote=zygote())
        except (NotebookError, CheckError) as e:  # a half-saved notebook: say so and keep watching
            click.echo(f"clash: {e}")
            return
        if notebook is None:
            record(course.root, result)
        click.echo(result.summary())
        click.echo(f"(checked in {time.perf_counter() - t0:.1f} s; waiting for the next save)")

    click.echo(f"Watching {_rel(path, course)} (Ctrl-C stops)")
    # The watcher runs from before the first check, in a thread: a save made while a check runs is queued, not
    # missed (watching only between checks would lose it).
    saves: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [saves.put(change) for change in watch_files(path)], daemon=True).start()
    try:
        once()
        while True:
            try:
                saves.get(timeout=0.5)
            except queue.Empty:
                continue
            while not saves.empty():  # several saves in a row: one check
                saves.get_nowait()
            click.echo("\nSaved: checking again")
            once()
    except KeyboardInterrupt:
        pass
    finally:
        for z in warm:
            z.close()


def lab_command(root: Path, port: int | None = None, extra: tuple[str, ...] = (), euid: int | None = None) -> list[str]:
    """The command line `clash lab` runs: JupyterLab at the course root, `--allow-root` only for root."""
    import os
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}"]
    if port is not None:
        cmd.append(f"--port={port}")
    if (os.geteuid() if euid is None else euid) == 0:
        cmd.append("--allow-root")  # Jupyter refuses to run as root without it
    return cmd + list(extra)


# JupyterLab's default is not to save widget state, so a saved notebook reopened later (its kernel gone) shows
# "Error displaying widget: model not found" where each Check panel was. Saved state shows the panels as they were.
LAB_OVERRIDES = {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True}}


def install_lab_settings(prefix: str = sys.prefix) -> Path | None:
    """Install the course's JupyterLab defaults as an overrides.d file of this environment (where JupyterLab looks
    for packages' overrides); a student's own settings still win. Returns the file, or None if it is not writable."""
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.d" / "clash-of-frameworks.json"
    text = json.dumps(LAB_OVERRIDES, indent=2) + "\n"
    try:
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError:
        return None
    return path


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, help="Port to serve on (default: JupyterLab's, 8888 or the next free one).")
@click.option("--dry-run", is_flag=True, help="Print the command line instead of running it.")
@click.argument("jupyter_args", nargs=-1, type=click.UNPROCESSED)
def lab(port, dry_run, jupyter_args) -> None:
    """Open JupyterLab at the course root: course.ipynb is the course map, each exercise's Check panel shows
    under its test cells. Extra arguments go to JupyterLab (e.g. --no-browser)."""
    import os
    import shlex
    course = _course()
    cmd = lab_command(course.root, port, jupyter_args)
    if dry_run:
        click.echo(shlex.join(cmd))
        return
    if install_lab_settings() is None:
        click.echo("note: could not install the course's JupyterLab settings; a reopened notebook may show "
                   "'model not found' in place of its Check panels until you run its cells again")
    click.echo(f"JupyterLab at {course.root}: open course.ipynb for the course map (Ctrl-C stops)")
    try:
        os.execv(cmd[0], cmd)  # JupyterLab takes over this process: its Ctrl-C, its exit status
    except OSError as e:
        _die(f"could not start JupyterLab: {e}")


@main.command()
@click.argument("assignment")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Submissions checked at once (with --device cuda: one per GPU).")
@click.option("--scheduler", metavar="ADDRESS", help="Check on a Dask cluster (dask.distributed scheduler address).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
def grade(assignment, workers, scheduler, device) -> None:
    """Grade every submission of ASSIGNMENT (submitted/<student>/ASSIGNMENT/) in parallel, into nbgrader's
    gradebook. Safe to interrupt: the next run keeps finished grades and grades only the rest."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from autograder._classgrade import grade_class, write_report

    course = _course()
    console = Console()
    bar = Progress(TextColumn(f"grading {assignment}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.description}"), console=console)
    task = bar.add_task("", total=None)

    def progress(done, total, sub):
        bar.update(task, completed=done, total=total, description=sub.student if sub else "")

    started = time.perf_counter()
    try:
        with bar:
            subs = grade_class(assignment, workers=workers, scheduler=scheduler, device=device,
                               on_progress=progress, course=course)
    except KeyboardInterrupt:
        console.print("Interrupted: finished grades are kept; run the same command again to grade the rest.")
        sys.exit(130)
    except (RegistryError, RuntimeError) as e:
        _die(str(e))
    table = Table(title=f"{assignment}: {len(subs)} submissions in {time.perf_counter() - started:.1f} s")
    for col in ("student", "status", "score", "reason", "time (s)"):
        table.add_column(col, overflow="fold")
    for sub in subs:
        rec = sub.record
        table.add_row(sub.student, rec.get("status", "?"), _score_cell(rec), rec.get("reason", ""),
                      str(rec.get("seconds", "")))
    console.print(table)
    failed = [s for s in subs if s.record.get("status") != "graded"]
    console.print(f"report: {_rel(write_report(course, assignment), course)}")
    console.print(f"{len(subs) - len(failed)} graded, {len(failed)} failed (could not be graded: see the reasons)")
    sys.exit(EXIT_FAILED if failed else EXIT_PASSED)  # as `nbgrader autograde`: a failed submission is not a success


def _score_cell(record: dict) -> str:
    """A score only for a graded submission: one that could not be graded shows `-`, never a 0 that looks earned."""
    if record.get("status") != "graded":
        return "-"
    return f"{record.get('score', 0):g}/{record.get('max_score', 0):g}"


@main.command()
@click.argument("assignment")
def report(assignment) -> None:
    """Print ASSIGNMENT's grading report: a score per graded submission, a reason for each that could not be
    graded (also written to grading/ASSIGNMENT/report.csv)."""
    from autograder._classgrade import missing_protections, report_rows, write_report

    course = _course()
    path = write_report(course, assignment)
    for row in report_rows(course, assignment):
        score = _score_cell(row)
        click.echo(f"{row['student']:<20} {row['status']:<11} {score:<8} {row['reason']}")
    for name, why in missing_protections(course, assignment).items():
        click.echo(f"warning: the jail lacked '{name}' while grading ({why}); see `clash doctor`")
    click.echo(f"written to {_rel(path, course)}")


@main.command()
def doctor() -> None:
    """What this machine enforces around a student's code: starts one jailed worker (no frameworks, well under
    a second) and lists each protection as in force or missing, with the reason. Exit 1 when one is missing."""
    import os
    import platform

    from rich.console import Console
    from rich.table import Table

    from autograder import _landlock
    from autograder._jail import PROTECTIONS
    from autograder._sandbox import Worker, WorkerError

    course = _course()
    worker = Worker("student", [], [], "cpu", course.limits)
    try:
        worker.wait_ready()
    except WorkerError as e:
        _die(f"could not start a jailed worker: {e}")
    finally:
        worker.close()
    table = Table(title=f"The jail on this machine: Linux {platform.release()}, Landlock ABI "
                        f"{_landlock.abi_version()}, grader {'root' if os.geteuid() == 0 else 'not root'}",
                  title_justify="left")
    for col in ("protection", "status", "what it means, or why it is missing"):
        table.add_column(col, overflow="fold")
    for name, meaning in PROTECTIONS.items():
        missing = worker.isolation_missing.get(name)
        table.add_row(name, "missing" if missing else "in force", missing or meaning)
    Console().print(table)
    sys.exit(EXIT_FAILED if worker.isolation_missing else EXIT_PASSED)


if __name__ == "__main__":
    main()
