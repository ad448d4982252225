"""A newcomer's first pipeline: README.md's quickstart, run as printed, then their credentials.

What someone who has never seen this repository does, following the README: in the clone,
`# quickstart 1` (bootstrap, Meltano on PATH, the clone's path); beside it, `# quickstart 2` (a
`meltano.yml` with a `sandbox` environment and a target-jsonl defined inline, so no Meltano Hub is
needed; `meltano add tap-whoop --from-ref hub/tap-whoop.yml` with `pip_url` pointed at the clone,
as tap-whoop is not on PyPI yet; `meltano install`); `# quickstart 3` (tap-whoop-sandbox in the
background) and `# quickstart 4` (`meltano --environment=sandbox run tap-whoop target-jsonl`).
The blocks are read from README.md and run with bash, in a temporary folder instead of the
clone's parent and on a free port instead of 8765; nothing else is changed. The rows must land,
one file per stream, and the run must cost the fewest WHOOP requests: profile, body measurement
and one page per 25 records of each collection (17 for alice's 90 days), none for the per-cycle
and by-id drill-downs. Then the README's credentials block (`meltano config set tap-whoop
client_secret …`) runs in the project: the secret goes to `.env` only, and the sandbox
environment still runs, with the rotated token its token store kept.

Needs .venv-meltano (`bash scripts/bootstrap.sh`) and PyPI (Meltano installs both plugins into
the project's own venvs, with uv). It fails without them; it never skips.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import typing as t
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.doc_blocks import sh_block
from whoop_sandbox import Sandbox

if t.TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DEFINITION = ROOT / "hub" / "tap-whoop.yml"
MELTANO = ROOT / ".venv-meltano" / "bin" / "meltano"
TIMEOUT = 600

README = ROOT / "README.md"
#: The quickstart's sandbox: its member and days of history (tap-whoop-sandbox's default).
MEMBER = "alice"
HISTORY_DAYS = 90
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
#: what the README's quickstart uses; its loader must say the same.
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


#: The port the README's quickstart prints; the test gives the sandbox a free one instead.
PRINTED_PORT = "8765"


def quickstart(n: int) -> str:
    return sh_block(README, f"# quickstart {n}:")


def credentials_block() -> str:
    return sh_block(README, "# in your Meltano project:")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def on_port(block: str, port: int) -> str:
    """The block with the sandbox's port replaced: the printed one may be taken here."""
    assert PRINTED_PORT in block
    return block.replace(PRINTED_PORT, str(port))


def heredoc(block: str, name: str) -> str:
    """The text a `cat > NAME <<'EOF'` in `block` writes."""
    found = re.search(rf"cat > {re.escape(name)} <<'EOF'\n(.*?\n)EOF\n", block, re.DOTALL)
    assert found, f"no heredoc for {name}"
    return found.group(1)


@dataclass
class SandboxProcess:
    process: subprocess.Popen[str]
    url: str

    def admin(self, path: str) -> t.Any:
        with urllib.request.urlopen(f"{self.url}/_sandbox/{path}", timeout=10) as response:
            return json.loads(response.read())


@contextlib.contextmanager
def background(block: str, cwd: Path, env: dict[str, str], port: int) -> Iterator[SandboxProcess]:
    """Run `block` (which starts the sandbox with `&`) in a bash that waits for it; stop both."""
    process = subprocess.Popen(
        ["bash", "-c", f"{block}\nwait"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"the sandbox did not start:\n{process.communicate()[0]}")
                time.sleep(0.1)
        yield SandboxProcess(process, url)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
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


def test_newcomer_runs_the_readmes_quickstart_as_printed(tmp_path: Path) -> None:
    if not MELTANO.exists():
        pytest.fail(f"{MELTANO} is missing: run `bash scripts/bootstrap.sh`", pytrace=False)

    def bash(block: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["bash", "-e", "-c", block],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"this block failed:\n{block}\n{tail(result)}"
        return result

    # 1. In the clone: what the block leaves behind is the environment of the next blocks.
    marker = "=== environment after the block ==="
    first = bash(f"{quickstart(1)}\necho '{marker}'; pwd; env -0", ROOT, newcomer_env())
    after = first.stdout.split(marker + "\n", 1)[1]
    folder, variables = after.split("\n", 1)
    assert Path(folder) == ROOT.parent, "the block should leave the shell beside the clone"
    env = dict(item.split("=", 1) for item in variables.split("\0") if "=" in item)
    assert env["TAP_WHOOP_CLONE"] == str(ROOT)
    assert shutil.which("meltano", path=env["PATH"]) == str(ROOT / ".venv" / "bin" / "meltano")
    assert shutil.which("tap-whoop-sandbox", path=env["PATH"]) is not None

    # 2. The project, in a temporary folder instead of beside the clone.
    port = free_port()
    second = on_port(quickstart(2), port)
    bash(second, tmp_path, env)
    project = tmp_path / "my-whoop"
    written = yaml.safe_load(heredoc(second, "meltano.yml"))
    # The loader is the Hub's target-jsonl (variant andyh1203), defined in the project.
    (loader,) = written["plugins"]["loaders"]
    for key in ("name", "namespace", "pip_url", "executable"):
        assert loader[key] == TARGET_JSONL[key], key
    hub_settings = {s["name"]: s for s in TARGET_JSONL["settings"]}
    for setting in loader["settings"]:
        assert setting == hub_settings[setting["name"]], setting["name"]

    # meltano.yml as `meltano add` left it (sed keeps a copy before it sets pip_url).
    text = (project / "meltano.yml.bak").read_text()
    added = yaml.safe_load(text)["plugins"]
    assert set(added) == {"extractors", *written["plugins"]}, (
        "meltano add created other plugin types"
    )
    assert added["loaders"] == written["plugins"]["loaders"]
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
    # tap-whoop is not on PyPI yet: the block installs it from the clone instead.
    assert text.count("pip_url: tap-whoop\n") == 1
    (extractor,) = yaml.safe_load((project / "meltano.yml").read_text())["plugins"]["extractors"]
    assert extractor["pip_url"] == f"-e {ROOT}"

    # 3 and 4. The sandbox in the background, the pipeline.
    output = project / "output" / "sandbox"
    with background(on_port(quickstart(3), port), project, env, port) as sandbox:
        bash(quickstart(4), project, env)

        now = datetime.datetime.fromisoformat(sandbox.admin("clock")["now"].replace("Z", "+00:00"))
        model = Sandbox(
            members=(MEMBER,), history_days=HISTORY_DAYS, now=now, per_minute=None, per_day=None
        )
        stats = sandbox.admin("stats")
        minimum = expected_requests(model)
        assert stats["by_path"] == minimum, (
            f"{stats['requests']} WHOOP requests instead of the {sum(minimum.values())} a full "
            "sync needs (paths with an id in them are the drill-downs)"
        )

        files = {path.stem: path for path in output.glob("*.jsonl")}
        assert sorted(files) == sorted([*SINGLE_PATHS, *COLLECTIONS])
        rows = {
            stream: [json.loads(line) for line in path.read_text().splitlines()]
            for stream, path in files.items()
        }
        (member,) = sandbox.admin("members")
        assert [row["user_id"] for row in rows["profile"]] == [member["user_id"]]
        assert [row["user_id"] for row in rows["body_measurement"]] == [member["user_id"]]
        for stream, (kind, _, key) in COLLECTIONS.items():
            expected = sorted(record[key] for record in model.records(MEMBER, kind))
            assert expected, f"the sandbox has no {kind} records"
            assert sorted(row[key] for row in rows[stream]) == expected, stream

        # The member's rotated refresh token is kept in the project, where a next run finds it.
        assert (project / ".meltano" / "tap-whoop-sandbox" / "tokens.json").is_file()

        # The README's next step, the real app's credentials: sensitive settings go to .env,
        # never to meltano.yml.
        bash(credentials_block(), project, env)
        assert "YOUR_CLIENT_SECRET" not in (project / "meltano.yml").read_text()
        assert "TAP_WHOOP_CLIENT_SECRET='YOUR_CLIENT_SECRET'" in (project / ".env").read_text()
        # ... and the sandbox environment still runs: its own credentials win over .env's, and
        # its token store holds the rotated token (the seed is spent).
        bash(quickstart(4), project, env)
