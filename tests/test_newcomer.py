"""A newcomer's first pipeline: tap-whoop added to a new Meltano project from hub/tap-whoop.yml.

What someone who has never seen this repository does, in a temporary folder: `meltano init`,
`meltano add tap-whoop --from-ref hub/tap-whoop.yml` (with `pip_url` pointed at this checkout,
as tap-whoop is not on PyPI yet), `meltano add target-jsonl` (from PyPI: the Hub itself may be
unreachable, so from a copy of the Hub's `andyh1203` definition), `meltano install`, the settings
with `meltano config set`, and `meltano run tap-whoop target-jsonl` against the WHOOP sandbox
(its own process). The rows must land, one file per stream, and the run must cost the fewest
WHOOP requests: profile, body measurement and one page per 25 records of each collection (17
for alice's 90 days), none for the per-cycle and by-id drill-downs.

Needs .venv-meltano (`bash scripts/bootstrap.sh`) and PyPI (Meltano installs both plugins into
the project's own venvs, with uv). It fails without them; it never skips.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import signal
import subprocess
import sys
import typing as t
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from whoop_sandbox import Sandbox

if t.TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DEFINITION = ROOT / "hub" / "tap-whoop.yml"
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
BIN = Path(sys.executable).parent
TIMEOUT = 600

MEMBER = "alice"
HISTORY_DAYS = 90
#: The sandbox clock (as in tests/test_pipelines.py): fixed, so the record counts are too.
NOW = "2026-11-12T15:00:00Z"
#: Records per page the tap asks WHOOP for (WHOOP's largest page).
PAGE = 25

#: stream -> API path, for the streams a newcomer gets
SINGLE_PATHS = {
    "profile": "/v2/user/profile/basic",
    "body_measurement": "/v2/user/measurement/body",
}
#: stream -> (sandbox record kind, API path, primary key)
COLLECTIONS = {
    "cycles": ("cycle", "/v2/cycle", "id"),
    "recovery": ("recovery", "/v2/recovery", "cycle_id"),
    "sleep": ("sleep", "/v2/activity/sleep", "id"),
    "workout": ("workout", "/v2/activity/workout", "id"),
}

#: Meltano Hub's definition of target-jsonl, variant andyh1203 (the Hub's default), trimmed to
#: what this test uses; `meltano add target-jsonl` writes the same into meltano.yml.
TARGET_JSONL = {
    "name": "target-jsonl",
    "namespace": "target_jsonl",
    "variant": "andyh1203",
    "pip_url": "target-jsonl",
    "executable": "target-jsonl",
    "label": "JSON Lines (JSONL)",
    "settings": [
        {"name": "destination_path", "kind": "string", "value": "output"},
        {"name": "do_timestamp_file", "kind": "boolean", "value": False},
        {"name": "custom_name", "kind": "string"},
    ],
}


@dataclass
class SandboxProcess:
    process: subprocess.Popen[str]
    url: str

    def admin(self, path: str) -> t.Any:
        with urllib.request.urlopen(f"{self.url}/_sandbox/{path}", timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    args = [
        str(BIN / "tap-whoop-sandbox"),
        "--port=0",
        f"--members={MEMBER}",
        f"--history-days={HISTORY_DAYS}",
        f"--now={NOW}",
        "--per-minute=none",
        "--per-day=none",
        f"--state-file={tmp_path / 'sandbox.json'}",
        "--quiet",
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        found = re.search(r"api_url=(http://\S+)/developer", banner)
        if not found:
            process.kill()
            pytest.fail(f"tap-whoop-sandbox did not start: {banner}{process.stdout.read()}")
        yield SandboxProcess(process, found.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def newcomer_env() -> dict[str, str]:
    """This environment minus anything that configures Meltano or a plugin."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TAP_WHOOP_", "TARGET_", "MELTANO_")) and name != "VIRTUAL_ENV"
    }
    env |= {"MELTANO_CLI_DISABLE_VERSION_CHECK": "1", "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false"}
    # uv (Meltano's installer) trusts only its own CA roots: give it the system's, as pip uses
    # (scripts/bootstrap.sh does the same).
    if "SSL_CERT_FILE" not in env:
        for bundle in (
            env.get("PIP_CERT", ""),
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ):
            if bundle and Path(bundle).is_file():
                env["SSL_CERT_FILE"] = bundle
                break
    return env


def tail(result: subprocess.CompletedProcess[str], lines: int = 40) -> str:
    text = (result.stdout or "") + (result.stderr or "")
    return "\n".join([line for line in text.splitlines() if "METRIC" not in line][-lines:])


def expected_requests(model: Sandbox) -> dict[str, int]:
    """API path -> the fewest requests a full sync of the member needs."""
    requests = dict.fromkeys(SINGLE_PATHS.values(), 1)
    for kind, path, _ in COLLECTIONS.values():
        requests[path] = max(1, math.ceil(len(model.records(MEMBER, kind)) / PAGE))
    return requests


def test_newcomer_adds_tap_whoop_from_the_hub_definition(
    tmp_path: Path, sandbox: SandboxProcess
) -> None:
    if not MELTANO.exists():
        pytest.fail(f"{MELTANO} is missing: run `bash scripts/bootstrap.sh`", pytrace=False)
    env = newcomer_env()
    project = tmp_path / "newcomer"

    def meltano(*args: str, cwd: Path = project) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(MELTANO), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"meltano {' '.join(args)} failed:\n{tail(result)}"
        return result

    meltano("init", project.name, "--no-usage-stats", cwd=tmp_path)

    # The definition, as the newcomer adds it (Meltano 4 infers the type from `tap-`).
    meltano("add", "tap-whoop", "--from-ref", str(DEFINITION), "--no-install")
    added = yaml.safe_load((project / "meltano.yml").read_text())["plugins"]
    assert list(added) == ["extractors"], "meltano add created other plugin types"
    (extractor,) = added["extractors"]
    hub = yaml.safe_load(DEFINITION.read_text())
    assert extractor["pip_url"] == hub["pip_url"] == "tap-whoop"
    assert [s["name"] for s in extractor["settings"]] == [s["name"] for s in hub["settings"]]
    assert {s["name"] for s in extractor["settings"] if s.get("sensitive")} == {
        "client_secret",
        "refresh_token",
        "store_url",  # its URL carries the database password
        "users",
    }

    # tap-whoop is not on PyPI yet: install it from this checkout instead.
    text = (project / "meltano.yml").read_text()
    assert text.count("pip_url: tap-whoop\n") == 1
    local = json.dumps(f"-e {ROOT}")  # a JSON string is a YAML scalar
    (project / "meltano.yml").write_text(
        text.replace("pip_url: tap-whoop\n", f"pip_url: {local}\n")
    )

    jsonl = tmp_path / "target-jsonl.yml"
    jsonl.write_text(yaml.safe_dump(TARGET_JSONL))
    meltano("add", "target-jsonl", "--from-ref", str(jsonl), "--no-install")
    meltano("install")

    output = project / "output" / "whoop"
    for plugin, name, value in [
        ("tap-whoop", "client_id", "sandbox-client"),
        ("tap-whoop", "client_secret", "sandbox-secret"),
        ("tap-whoop", "refresh_token", f"sandbox-seed-{MEMBER}"),
        ("tap-whoop", "api_url", f"{sandbox.url}/developer"),
        ("tap-whoop", "oauth_url", f"{sandbox.url}/oauth/oauth2"),
        ("target-jsonl", "destination_path", str(output)),
    ]:
        meltano("config", "set", plugin, name, value)
    # Sensitive settings go to .env, never to meltano.yml.
    assert "sandbox-secret" not in (project / "meltano.yml").read_text()
    assert "TAP_WHOOP_CLIENT_SECRET='sandbox-secret'" in (project / ".env").read_text()

    meltano("run", "tap-whoop", "target-jsonl")

    model = Sandbox(
        members=(MEMBER,),
        history_days=HISTORY_DAYS,
        now=datetime.datetime.fromisoformat(NOW.replace("Z", "+00:00")),
        per_minute=None,
        per_day=None,
    )
    stats = sandbox.admin("stats")
    minimum = expected_requests(model)
    assert stats["by_path"] == minimum, (
        f"{stats['requests']} WHOOP requests instead of the {sum(minimum.values())} a full sync "
        "needs (paths with an id in them are the drill-downs)"
    )

    written = {path.stem: path for path in output.glob("*.jsonl")}
    assert sorted(written) == sorted([*SINGLE_PATHS, *COLLECTIONS])
    rows = {
        stream: [json.loads(line) for line in path.read_text().splitlines()]
        for stream, path in written.items()
    }
    (member,) = sandbox.admin("members")
    assert [row["user_id"] for row in rows["profile"]] == [member["user_id"]]
    assert [row["user_id"] for row in rows["body_measurement"]] == [member["user_id"]]
    for stream, (kind, _, key) in COLLECTIONS.items():
        expected = sorted(record[key] for record in model.records(MEMBER, kind))
        assert expected, f"the sandbox has no {kind} records"
        assert sorted(row[key] for row in rows[stream]) == expected, stream

    # The member's rotated refresh token is kept in the project, where a next run finds it.
    assert (project / ".meltano" / "tap-whoop" / "tokens.json").is_file()
