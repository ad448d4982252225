"""The wheel: the tap alone pulls no web framework; the sandbox is an extra with its own package."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
WEB = {"flask", "werkzeug", "waitress"}
#: The webhook receiver's server and request parsing: a plain install has them (one command
#: installs the receiver), and only its module imports them, so a sync never loads them.
RECEIVER = {"werkzeug", "waitress"}
RECEIVER_MODULE = "tap_whoop/webhooks/receiver.py"
NEEDS_FLASK = "tap-whoop-sandbox: error: the sandbox needs Flask: pip install 'tap-whoop[sandbox]'"

# Loads the sandbox CLI as the installed `tap-whoop-sandbox` script does, on a Python where
# Flask and werkzeug are not installed (imports of them fail as for a missing package).
WITHOUT_FLASK = """
import importlib, sys
from importlib.abc import MetaPathFinder

class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"flask", "werkzeug"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NotInstalled())
module, _, attr = sys.argv[1].partition(":")
sys.exit(getattr(importlib.import_module(module), attr)(["--port", "0"]))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    (path,) = out.glob("tap_whoop-*.whl")
    with zipfile.ZipFile(path) as built:
        yield built


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode()


def _console_scripts(wheel: zipfile.ZipFile) -> dict[str, str]:
    lines = _dist_info(wheel, "entry_points.txt").splitlines()
    section = lines.index("[console_scripts]")
    scripts = {}
    for line in lines[section + 1 :]:
        if line.startswith("["):
            break
        if "=" in line:
            name, _, target = line.partition("=")
            scripts[name.strip()] = target.strip()
    return scripts


def test_web_framework_only_in_extras_and_the_receivers_server_in_the_install(
    wheel: zipfile.ZipFile,
) -> None:
    metadata = Parser().parsestr(_dist_info(wheel, "METADATA"))
    requirements = [Requirement(line) for line in metadata.get_all("Requires-Dist", [])]
    # (web package, extra that pulls it); "" is a plain `pip install tap-whoop`
    pulled = {
        (req.name.lower(), extra)
        for req in requirements
        if req.name.lower() in WEB
        for extra in ("", "sandbox", "dev", "other")
        if req.marker is None or req.marker.evaluate({"extra": extra})
    }
    # `dev` includes `tap-whoop[sandbox]`, which hatchling writes out as dev's own flask
    # requirement; the receiver's packages come with every install, whatever the extra.
    receiver = {(name, extra) for name in RECEIVER for extra in ("", "sandbox", "dev", "other")}
    assert pulled == {("flask", "sandbox"), ("flask", "dev"), *receiver}
    assert "sandbox" in metadata.get_all("Provides-Extra", [])


def test_console_scripts_declared(wheel: zipfile.ZipFile) -> None:
    scripts = _console_scripts(wheel)
    assert scripts["tap-whoop"] == "tap_whoop.cli:main"
    assert scripts["tap-whoop-sandbox"].startswith("whoop_sandbox.")


def test_wheel_holds_both_packages(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist() if name.endswith(".py")}
    assert tops == {"tap_whoop", "whoop_sandbox"}
    assert "whoop_sandbox/__init__.py" in wheel.namelist()
    assert not [name for name in wheel.namelist() if name.startswith("tap_whoop/sandbox/")]


def test_only_the_receiver_imports_a_web_server_and_nothing_the_sandbox(
    wheel: zipfile.ZipFile,
) -> None:
    found = []
    for name in wheel.namelist():
        if not (name.startswith("tap_whoop/") and name.endswith(".py")):
            continue
        forbidden = (
            {"flask", "whoop_sandbox"} if name == RECEIVER_MODULE else {*WEB, "whoop_sandbox"}
        )
        for node in ast.walk(ast.parse(wheel.read(name), filename=name)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            found += [f"{name}:{node.lineno} {m}" for m in modules if m.split(".")[0] in forbidden]
    assert found == []


def test_sandbox_never_imports_tap(wheel: zipfile.ZipFile) -> None:
    for name in wheel.namelist():
        if name.startswith("whoop_sandbox/") and name.endswith(".py"):
            assert b"tap_whoop" not in wheel.read(name), name


def test_importing_tap_loads_no_web_framework() -> None:
    code = "import sys, tap_whoop.tap; print(sorted({m.split('.')[0] for m in sys.modules}))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = set(ast.literal_eval(result.stdout.strip().splitlines()[-1]))
    assert "tap_whoop" in loaded
    assert loaded.isdisjoint({*WEB, "whoop_sandbox"})


def test_sandbox_command_without_flask_says_what_to_install(wheel: zipfile.ZipFile) -> None:
    target = _console_scripts(wheel)["tap-whoop-sandbox"]
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_FLASK, target],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [NEEDS_FLASK]
