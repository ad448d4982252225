"""Helpers for the OAuth tests: the real `tap-whoop` command, the token store, racing workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import requests

from tap_whoop.oauth.app import WhoopApp
from tap_whoop.oauth.member import MemberAuth
from tap_whoop.stores.file import TokenStore
from tests.conftest import CLIENT_ID, CLIENT_SECRET

if t.TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

    from whoop_sandbox import Sandbox

_SCRIPT = Path(sys.executable).with_name("tap-whoop")
TAP_WHOOP = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tap_whoop"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: no browser, no Meltano, quiet SDK logs."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MELTANO_", "TAP_WHOOP_"))
        and name not in ("DISPLAY", "WAYLAND_DISPLAY")
    }
    env.update({"CI": "1", "TAP_WHOOP_LOGLEVEL": "WARNING"}, **extra)
    return env


def run_cli(
    *args: str,
    stdin: str | None = None,
    timeout: float = 120,
    prefix: t.Sequence[str] = (),
    **popen: t.Any,
) -> subprocess.CompletedProcess[str]:
    """Run `tap-whoop` to completion (under `prefix`, e.g. `setpriv …`)."""
    popen.setdefault("env", cli_env())
    return subprocess.run(
        [*prefix, *TAP_WHOOP, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **popen,
    )


def write_json(path: Path, data: t.Any) -> Path:
    """Write `data` as JSON, creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def catalog_file(path: Path, config: dict[str, t.Any], streams: set[str]) -> Path:
    """A catalog selecting exactly `streams`, written to `path`."""
    from tests.conftest import catalog_selecting

    return write_json(path, catalog_selecting(config, streams))


def store_path(config: dict[str, t.Any]) -> Path:
    """The config's token store file."""
    return Path(config["token_store_path"])


def stored(config: dict[str, t.Any]) -> dict[str, t.Any]:
    """The token store's members."""
    return t.cast(dict[str, t.Any], json.loads(store_path(config).read_text())["members"])


def expire_access_tokens(config: dict[str, t.Any]) -> None:
    """Make every stored access token look expired, so the next use refreshes."""
    path = store_path(config)
    data = json.loads(path.read_text())
    for entry in data["members"].values():
        entry["expires_at"] = 0
    path.write_text(json.dumps(data))


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The run's single error line; fails unless it ended non-zero with exactly one, untraced."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("tap-whoop: error: ")]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], result.stderr
    return errors[0]


def race_for_token(
    barrier: Barrier, config: dict[str, t.Any], key: str, results: Queue[str]
) -> None:
    """One process of a race: wait for all, then ask for the member's access token at once."""
    app = WhoopApp(config["client_id"], config["client_secret"], config["oauth_url"])
    auth = MemberAuth(key, config.get("refresh_token"), TokenStore(config["token_store_path"]), app)
    barrier.wait()
    try:
        results.put(auth.access_token())
    except Exception as exc:
        results.put(f"error: {exc}")


def refresh_directly(sandbox: Sandbox, token: str) -> requests.Response:
    """Spend `token` at the sandbox as another client of the app would."""
    return requests.post(
        f"{sandbox.server.oauth_url}/token",  # type: ignore[attr-defined]
        data={
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": "offline",
        },
        timeout=10,
    )
