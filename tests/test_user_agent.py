"""Every request names the tap: WHOOP's CDN may refuse Python's default agents with an HTML 403.

The sandbox here refuses, as that CDN would, any request to its API or token endpoint whose
User-Agent is a library's default, and counts them.
"""

from __future__ import annotations

import typing as t

import requests
from auth_support import run_cli, write_json
from conftest import run_tap, tap_config
from test_auth_cli import AuthRun

from tap_whoop import USER_AGENT, __version__

if t.TYPE_CHECKING:
    from pathlib import Path

    from whoop_sandbox import Sandbox


def test_the_sandbox_refuses_a_default_agent_as_the_cdn_would(sandbox: Sandbox) -> None:
    sandbox.refuse_default_agents = True
    server = sandbox.server  # type: ignore[attr-defined]

    refused = requests.get(f"{server.api_url}/v2/user/profile/basic", timeout=10)

    assert refused.status_code == 403
    assert refused.headers["Content-Type"].startswith("text/html")
    assert sandbox.stats()["default_agents"] == 1


def test_sync_check_auth_and_revoke_send_the_taps_user_agent_and_never_a_default_one(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.refuse_default_agents = True
    config = tap_config(sandbox, tmp_path)
    path = str(write_json(tmp_path / "config.json", config))

    synced = run_tap(config)
    checked = run_cli("--config", path, "--test")
    del config["refresh_token"]
    consent_config = str(write_json(tmp_path / "consent.json", {**config, "users": [{"key": "b"}]}))
    consent = AuthRun("--config", consent_config, "--member", "b", "--no-browser")
    authorized = consent.finish(consent.consent())
    revoked = run_cli(
        "revoke", "--config", consent_config, "--member", "b", "--also-disconnect-shared"
    )

    assert synced.error is None, synced.error
    assert checked.returncode == 0, checked.stderr
    assert authorized.returncode == 0, authorized.stderr
    assert revoked.returncode == 0, revoked.stderr
    assert sandbox.stats()["default_agents"] == 0
    assert sandbox.stats()["requests"] > 0
    assert USER_AGENT.startswith(f"tap-whoop/{__version__} (+https://")
