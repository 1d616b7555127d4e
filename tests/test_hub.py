"""A class on JupyterHub, end to end (issue 15): a real JupyterHub on loopback (DummyAuthenticator, two students,
SimpleLocalProcessSpawner: each student's server in its own home folder, all under the test's own user, so no
system accounts are made), nbgrader's exchange in a shared folder outside the course, and the
steps of a class: the instructor releases; each student fetches, works and submits through their own single-user
server (nbgrader's REST handlers, what the Assignments tab calls); the instructor collects, grades with
`clash grade`, generates and releases feedback; the students fetch it. A fetched notebook lives outside the course
root, and finds the course through CLASH_ROOT, which the hub sets for every server."""
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from classroom import ASSIGNMENT, WRONG_TORCH, gradebook_scores, make_course, solved_sources, with_solution
from conftest import notebook_with

pytestmark = pytest.mark.slow

STUDENTS = {"clash-s1": solved_sources(), "clash-s2": with_solution(torch_loss_and_grad=WRONG_TORCH)}
COURSE_ID = "clash-of-frameworks"


def _missing() -> str | None:
    if shutil.which("configurable-http-proxy") is None:
        return "needs configurable-http-proxy (npm install -g configurable-http-proxy; .ci/run installs it)"
    if shutil.which("jupyterhub", path=str(Path(sys.executable).parent)) is None:
        return "needs jupyterhub (pip install -e '.[test]' installs it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, token: str, method: str = "GET", data: dict | None = None, timeout: float = 120) -> dict:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        text = r.read().decode()
    return json.loads(text) if text.strip() else {}


def _wait(what: str, test, seconds: float = 180):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            got = test()
            if got:
                return got
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = e
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {seconds:g} s ({last})")


def _nbgrader(*args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, f"nbgrader {' '.join(args)}: {run.stdout[-2000:]}{run.stderr[-3000:]}"
    return run


@pytest.fixture(scope="module")
def hub():
    missing = _missing()
    if missing:
        if os.environ.get("CLASH_REQUIRE_HUB") == "1":
            pytest.fail(f"the JupyterHub class test must run here: {missing}")
        pytest.skip(missing)
    base = Path(tempfile.mkdtemp(prefix="clash-hub-", dir="/tmp"))
    base.chmod(0o755)
    exchange = base / "exchange"
    exchange.mkdir()
    exchange.chmod(0o1777)   # every user of the class writes here; the sticky bit keeps their files theirs
    config = base / "jupyter-config"   # the deployment's own nbgrader config, as /etc/jupyter would hold it
    config.mkdir()
    # A student is who the hub says: with one system account per student (LocalProcessSpawner) nbgrader would
    # read the account's name; with every server under one account, the hub's JUPYTERHUB_USER says it.
    (config / "nbgrader_config.py").write_text(
        f"import os\nc = get_config()\nc.Exchange.root = {str(exchange)!r}\n"
        f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
        f"c.CourseDirectory.student_id = os.environ.get('JUPYTERHUB_USER', '*')\n")
    course = make_course(base / "course")
    students_course = base / "students-course"   # what students read: `clash init`, no solutions
    subprocess.run([sys.executable, "-m", "autograder.cli", "init", str(students_course)], check=True,
                   capture_output=True, timeout=120)
    for path in (config, students_course, *students_course.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    token, port, hub_port = secrets.token_hex(16), _free_port(), _free_port()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("CLASH_ROOT", "JUPYTER_CONFIG_PATH")}
    env.update(JUPYTER_CONFIG_PATH=str(config), PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    (base / "jupyterhub_config.py").write_text(f"""
c = get_config()
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{base}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{base}/jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.pid_file = "{base}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{base}/home/{{username}}"
c.Authenticator.allowed_users = {set(STUDENTS)!r}
c.JupyterHub.services = [{{"name": "clash-test", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "clash-test", "services": ["clash-test"],
                            "scopes": ["admin:users", "admin:servers", "access:servers"]}}]
c.Spawner.cmd = [{str(bin_dir / "jupyterhub-singleuser")!r}]
c.Spawner.notebook_dir = "~"
c.Spawner.args = {["--allow-root"] if os.geteuid() == 0 else []!r}   # Jupyter refuses root without it
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
# Every student's server reads the class's nbgrader config and finds the course by a setting, not a guess.
c.Spawner.environment = {{"JUPYTER_CONFIG_PATH": {str(config)!r}, "CLASH_ROOT": {str(students_course)!r},
                         "PATH": {str(bin_dir)!r} + ":/usr/bin:/bin"}}
""")
    log = open(base / "jupyterhub.log", "w")
    proc = subprocess.Popen([str(bin_dir / "jupyterhub"), "-f", str(base / "jupyterhub_config.py")], cwd=base,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait("the hub's API answering", lambda: _api(f"{url}/hub/api/", token))
        yield {"url": url, "token": token, "course": course, "exchange": exchange, "env": env,
               "students_course": students_course, "base": base}
    finally:
        for user in STUDENTS:
            try:
                _api(f"{url}/hub/api/users/{user}/server", token, "DELETE", timeout=30)
            except (urllib.error.URLError, OSError):
                pass
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()
        if os.environ.get("CLASH_KEEP_HUB") != "1":
            shutil.rmtree(base, ignore_errors=True)


def _server(hub, user: str) -> str:
    """Start `user`'s single-user server through the hub; its URL through the proxy."""
    url, token = hub["url"], hub["token"]
    try:
        _api(f"{url}/hub/api/users/{user}", token, "POST", {})
    except urllib.error.HTTPError as e:
        if e.code != 409:   # already there
            raise
    try:
        _api(f"{url}/hub/api/users/{user}/server", token, "POST", {})
    except urllib.error.HTTPError as e:
        if e.code != 400:   # already running
            raise
    _wait(f"{user}'s server", lambda: _api(f"{url}/hub/api/users/{user}", token)["servers"].get("", {}).get("ready"))
    return f"{url}/user/{user}"


def _action(hub, server: str, action: str) -> dict:
    """What the Assignments tab does: POST to nbgrader's handler in the student's own server."""
    reply = _api(f"{server}/assignments/{action}", hub["token"], "POST",
                 {"course_id": COURSE_ID, "assignment_id": ASSIGNMENT}, timeout=300)
    assert reply.get("success"), f"{action}: {reply}"
    return reply


def test_a_class_releases_fetches_submits_collects_grades_and_returns_feedback(hub):
    course, env = hub["course"], hub["env"]
    _nbgrader("release_assignment", ASSIGNMENT, "--force", cwd=course, env=env)
    assert (hub["exchange"] / COURSE_ID / "outbound" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()

    homes = {}
    for user, answers in STUDENTS.items():
        server = _server(hub, user)
        _action(hub, server, "fetch")
        home = hub["base"] / "home" / user
        fetched = home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        assert fetched.is_file(), sorted(str(p) for p in home.rglob("*"))[:20]
        notebook_with(fetched, answers, fetched)      # the student's work, saved in their own notebook
        _action(hub, server, "submit")
        homes[user] = home

    _nbgrader("collect", ASSIGNMENT, cwd=course, env=env)
    for user in STUDENTS:
        assert (course / "submitted" / user / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").is_file()
    graded = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", ASSIGNMENT, "--workers", "2"],
                            cwd=course, env=env, capture_output=True, text=True, timeout=900)
    assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
    scores = gradebook_scores(course)
    assert scores["clash-s1"] == 10 and scores["clash-s2"] < 10, scores
    _nbgrader("generate_feedback", ASSIGNMENT, cwd=course, env=env)
    _nbgrader("release_feedback", ASSIGNMENT, cwd=course, env=env)

    for user, home in homes.items():
        _action(hub, _server(hub, user), "fetch_feedback")
        (page,) = (home / ASSIGNMENT / "feedback").glob(f"*/{ASSIGNMENT}.html")
        text = page.read_text()
        if user == "clash-s1":
            assert "torch_loss_and_grad [loss]" not in text and "Score: 10.0 / 10.0" in text.replace("\n", " ")
        else:
            assert "torch_loss_and_grad" in text and "Hint" in text, text[:2000]


def test_a_fetched_notebook_finds_the_course_through_the_hubs_setting(hub):
    """Outside the course root, `check` finds the course by CLASH_ROOT, as the hub's servers have it (the students'
    copy, without solutions), ahead of any other place. Run in the student's home, on the student's answers."""
    user = "clash-s1"
    home = hub["base"] / "home" / user
    fetched = home / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    if not fetched.is_file():
        pytest.skip("the class test above fetches the notebook first")
    code = ("from autograder import run_check; from autograder._registry import find_root; print(find_root()); "
            f"r = run_check('{ASSIGNMENT}.torch_grad', notebook='{fetched}'); print(r.parts[0].status)")
    env = {"PATH": hub["env"]["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "JUPYTERHUB_USER": user,
           "CLASH_ROOT": str(hub["students_course"])}
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=home, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    root, status = run.stdout.split()
    assert root == str(hub["students_course"]) and status == "passed", run.stdout
    assert not (Path(root) / "solutions").exists()
