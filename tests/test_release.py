"""The release: what `python -m build` makes is what users install and run.

Builds the sdist and the wheel from this checkout, checks them with `twine check --strict`, then
installs the wheel with its `[sandbox]` extra into a clean venv (pip fetches the dependencies
from the package index) and, from that venv alone, runs `tap-whoop --about` and a real sync
against that venv's `tap-whoop-sandbox`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import tap_whoop

ROOT = Path(__file__).resolve().parents[1]
VERSION = tap_whoop.__version__

pytestmark = pytest.mark.e2e


def run(command: list[str | Path], timeout: float, **options: object) -> str:
    """Run a command; on failure show its output, which CalledProcessError would hide."""
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **options,  # type: ignore[call-overload]
    )
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return str(result.stdout)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, ROOT], timeout=300)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (path,) = dist.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def sdist(dist: Path) -> Path:
    (path,) = dist.glob("*.tar.gz")
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A clean venv (no system site-packages, not this checkout) with the wheel and its extra."""
    home = tmp_path_factory.mktemp("clean-venv")
    venv.create(home / "venv", with_pip=True, clear=True)
    bin_dir = home / "venv" / ("Scripts" if os.name == "nt" else "bin")
    run(
        [
            bin_dir / "python",
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            f"{wheel}[sandbox]",
        ],
        timeout=600,
        cwd=home,
    )
    return bin_dir


def test_one_version_names_both_distributions(wheel: Path, sdist: Path) -> None:
    assert wheel.name == f"tap_whoop-{VERSION}-py3-none-any.whl"
    assert sdist.name == f"tap_whoop-{VERSION}.tar.gz"
    assert re.search(rf"^## \[{re.escape(VERSION)}\]", (ROOT / "CHANGELOG.md").read_text(), re.M)


def test_twine_check_passes(wheel: Path, sdist: Path) -> None:
    out = run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist], timeout=120)
    assert out.count("PASSED") == 2, out


def test_wheel_holds_the_packages_and_no_tests(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as built:
        names = built.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"tap_whoop", "whoop_sandbox", f"tap_whoop-{VERSION}.dist-info"}
    assert not [name for name in names if "tests/" in name or name.startswith("test_")]


def test_sdist_holds_the_tests_and_the_changelog(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"README.md", "CHANGELOG.md", "pyproject.toml", "tests/conftest.py"} <= names
    assert {"tap_whoop/cli.py", "whoop_sandbox/data.py"} <= names


def test_clean_venv_runs_the_installed_tap(installed: Path, tmp_path: Path) -> None:
    where = run(
        [installed / "python", "-c", "import tap_whoop, whoop_sandbox; print(tap_whoop.__file__)"],
        timeout=60,
        cwd=tmp_path,
    )
    assert "site-packages" in where
    assert not Path(where.strip()).is_relative_to(ROOT)
    about = json.loads(
        run([installed / "tap-whoop", "--about", "--format", "json"], timeout=120, cwd=tmp_path)
    )
    assert about["name"] == "tap-whoop"
    assert about["version"] == VERSION


@pytest.fixture
def sandbox_urls(installed: Path) -> Iterator[tuple[str, str]]:
    """The installed `tap-whoop-sandbox` on a free port; (api_url, oauth_url) from its banner."""
    command = [
        str(installed / "tap-whoop-sandbox"),
        "--port",
        "0",
        "--members",
        "alice",
        "--history-days",
        "14",
        "--now",
        "2026-11-20T12:00:00Z",
        "--per-minute",
        "none",
        "--per-day",
        "none",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
            fields = dict(part.split("=", 1) for part in banner.split() if "=" in part)
            assert "api_url" in fields, banner
            yield fields["api_url"], fields["oauth_url"]
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0


def test_clean_venv_syncs_from_its_sandbox(
    installed: Path, sandbox_urls: tuple[str, str], tmp_path: Path
) -> None:
    api_url, oauth_url = sandbox_urls
    config = {
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
        "refresh_token": "sandbox-seed-alice",
        "api_url": api_url,
        "oauth_url": oauth_url,
        "token_store_path": str(tmp_path / "store" / "tokens.json"),
        "max_requests_per_minute": 10_000,
    }
    config_file = tmp_path / "tap.json"
    config_file.write_text(json.dumps(config))
    out = run([installed / "tap-whoop", "--config", config_file], timeout=300, cwd=tmp_path)
    messages = [json.loads(line) for line in out.splitlines() if line.strip()]
    records: dict[str, int] = {}
    for message in messages:
        if message["type"] == "RECORD":
            records[message["stream"]] = records.get(message["stream"], 0) + 1
    assert records.get("profile") == 1
    assert records.get("cycles", 0) >= 14
    assert records.get("sleep", 0) >= 13
    assert records.get("recovery", 0) >= 13
    assert records.get("workout", 0) >= 1
    assert any(message["type"] == "STATE" for message in messages)
    assert records.get("body_measurement") == 1
    stored = json.loads((tmp_path / "store" / "tokens.json").read_text())
    assert stored["members"], "the rotated refresh token was stored"
