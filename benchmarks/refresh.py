"""A token refresh's CPU in the tap beside a bare client's, with 200 and 1,000 members stored.

    python benchmarks/refresh.py          # about a minute

Each side runs in a child process of its own against one sandbox on loopback and refreshes the
same number of members once each; CPU is the child's (`getrusage`), start-up excluded (each
child reports its own CPU for the refreshes alone). The tap side goes through `MemberAuth` and a
file token store that already holds every member's entry (so each refresh reads the entry,
records the refresh in flight, and stores the rotated token, durably); the bare side posts the
same form with one `requests.Session` and keeps the tokens in memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import typing as t
from pathlib import Path

import _common as c

from whoop_sandbox import Sandbox, SandboxServer

REFRESHED = 200
TAP = """
import json, sys, time
from tap_whoop.oauth.app import WhoopApp
from tap_whoop.oauth.member import MemberAuth
from tap_whoop.stores.file import TokenStore
config = json.load(open(sys.argv[1]))
store = TokenStore(config["store"])
app = WhoopApp(config["client_id"], config["client_secret"], config["oauth_url"])
started = time.process_time()
for key, token in config["refresh"]:
    MemberAuth(key, token, store, app).access_token()
print(time.process_time() - started)
"""
BARE = """
import json, sys, time
import requests
config = json.load(open(sys.argv[1]))
session = requests.Session()
tokens = {}
started = time.process_time()
for key, token in config["refresh"]:
    answer = session.post(config["oauth_url"] + "/token", data={
        "grant_type": "refresh_token", "refresh_token": token, "client_id": config["client_id"],
        "client_secret": config["client_secret"], "scope": "offline"}, timeout=30)
    answer.raise_for_status()
    tokens[key] = answer.json()
print(time.process_time() - started)
"""


def measure(stored: int) -> dict[str, t.Any]:
    """CPU ms per refresh, tap and bare, with `stored` members in the token store."""
    keys = [f"m{index:04d}" for index in range(stored)]
    box = Sandbox(members=keys, history_days=1, now=c.NOW, per_minute=None, per_day=None)
    result: dict[str, t.Any] = {"stored_members": stored, "refreshes": REFRESHED}
    with SandboxServer(box) as server, tempfile.TemporaryDirectory() as tmp:
        others = {key: _entry(index) for index, key in enumerate(keys)}
        for side, script in (("tap", TAP), ("bare", BARE)):
            store = Path(tmp) / side / "tokens.json"
            store.parent.mkdir()
            store.write_text(json.dumps({"version": 1, "members": others}))
            store.chmod(0o600)
            config = Path(tmp) / f"{side}.json"
            refresh = [(key, box.issue_refresh_token(key)) for key in keys[-REFRESHED:]]
            config.write_text(
                json.dumps(
                    {
                        "client_id": c.CLIENT_ID,
                        "client_secret": c.CLIENT_SECRET,
                        "oauth_url": server.oauth_url,
                        "store": str(store),
                        "refresh": refresh,
                    }
                )
            )
            out = subprocess.run(
                [sys.executable, "-c", script, str(config)],
                capture_output=True,
                text=True,
                check=True,
            )
            result[f"{side}_cpu_ms_per_refresh"] = round(1000 * float(out.stdout) / REFRESHED, 2)
    return result


def _entry(index: int) -> dict[str, t.Any]:
    """A stored member as the tap leaves it after a few runs (about 600 bytes of JSON)."""
    digest = f"sha256:{index:064x}"
    return {
        "access_token": f"sandbox-access-{index:08d}-" + "x" * 40,
        "expires_at": 1.79e9,
        "lifetime": 3600.0,
        "refresh_token": f"sandbox-refresh-{index:08d}-" + "y" * 24,
        "scope": "read:profile read:body_measurement read:cycles read:recovery read:sleep "
        "read:workout offline",
        "seeded_from": digest,
        "seen": [
            digest,
            digest.replace("sha256:0", "sha256:1"),
            digest.replace("sha256:0", "sha256:2"),
        ],
        "updated_at": "2026-11-20T12:00:00+00:00",
        "user_id": 10_000 + index,
    }


def main() -> None:
    runs = [measure(stored) for stored in (200, 1000)]
    print(
        c.table(
            ["members stored", "refreshes", "tap CPU ms/refresh", "bare CPU ms/refresh"],
            [
                [
                    r["stored_members"],
                    r["refreshes"],
                    r["tap_cpu_ms_per_refresh"],
                    r["bare_cpu_ms_per_refresh"],
                ]
                for r in runs
            ],
        )
    )
    print(f"wrote {c.save('refresh', {'runs': runs})}")


if __name__ == "__main__":
    main()
