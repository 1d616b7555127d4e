"""Package hygiene (issue 15): a version, a license, type information, a lint configuration the code keeps, and a
public API that changes only on purpose."""
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

import autograder
from autograder.cli import main

from conftest import ROOT

# The public surface, httpx-style: everything else is private (a leading underscore) or a submodule.
PUBLIC = ["CheckError", "CheckResult", "Course", "NotebookError", "PartResult", "RegistryError", "check",
          "load_course", "run_check", "show_progress"]


def test_the_public_api_is_what_all_lists():
    assert sorted(autograder.__all__) == PUBLIC, "autograder.__all__ changed: update PUBLIC here on purpose"
    for name in PUBLIC:
        assert getattr(autograder, name) is not None
    exported = {n for n in vars(autograder) if not n.startswith("_")} - set(PUBLIC)
    assert exported <= {"annotations"} | {m for m in exported if isinstance(getattr(autograder, m), type(sys))}, \
        f"public names outside __all__: {sorted(exported)}"


def test_clash_version_names_the_installed_package():
    out = CliRunner().invoke(main, ["--version"])
    assert out.exit_code == 0 and out.output.startswith("clash, version "), out.output
    assert out.output.split()[-1] == autograder.__version__ != "0+unknown"


def test_license_and_type_information_ship_with_the_package():
    import tomllib
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (ROOT / "autograder" / "py.typed").is_file()


def test_the_code_is_clean_under_the_projects_ruff_configuration():
    ruff = shutil.which("ruff", path=str(__import__("pathlib").Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    run = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:]


def test_ci_runs_the_readmes_install_and_test_commands():
    """CI does the README's install (without the two commands that show the map) and then exactly its test command:
    the two commands a new user copies are the ones CI proves."""
    import re
    start = (ROOT / "README.md").read_text().split("## Start", 1)[1]
    install, tests = re.findall(r"```bash\n(.*?)\n```", start, re.S)[:2]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert install.removesuffix(" && clash && clash check") in ci, (install, ci)
    assert "-c constraints.txt" in install and (ROOT / "constraints.txt").is_file()
    assert ci[-1] == tests, (tests, ci[-1])
