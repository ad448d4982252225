"""Token stores that fight back: files that cannot be replaced, links, killed writes, short tokens.

Each test runs the real tap over a real file system against the sandbox. Mounts and immutable
files need root (and `mount`/`chattr`); those tests are skipped, saying why, without them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest

from tap_whoop.oauth.app import WhoopApp
from tap_whoop.oauth.member import MemberAuth
from tap_whoop.stores import file as file_store
from tap_whoop.stores.file import TokenStore
from tests.auth_support import (
    TAP_WHOOP,
    catalog_file,
    cli_env,
    error_line,
    expire_access_tokens,
    refresh_directly,
    run_cli,
    store_path,
    stored,
    write_json,
)
from tests.conftest import CLIENT_ID, CLIENT_SECRET, run_tap, tap_config

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from multiprocessing.synchronize import Event

    from whoop_sandbox import Sandbox

PROFILE = {"profile"}
ALL_STREAMS = {"profile", "body_measurement", "cycles", "recovery", "sleep", "workout"}
EMPTY_STORE = b'{"version": 1, "members": {}}'


def synced(config: dict[str, t.Any], select: set[str] = PROFILE) -> None:
    result = run_tap(config, select=select)
    assert result.error is None, result.error
    assert result.records("profile")


def orphans(path: Path) -> list[Path]:
    return sorted(path.parent.glob(".tokens-*"))


def _root_with(tool: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root for {tool}")
    if not shutil.which(tool):
        pytest.skip(f"needs {tool} (apt-get install e2fsprogs util-linux)")


@contextlib.contextmanager
def bind_mounted(source: Path, target: Path) -> Iterator[None]:
    """`source` mounted onto the file `target`, as `docker run -v source:target` does."""
    _root_with("mount")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.touch()
    mounted = subprocess.run(["mount", "--bind", str(source), str(target)], check=False)
    if mounted.returncode != 0:
        pytest.skip("mount --bind is not permitted here")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=False)


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    _root_with("chattr")
    if subprocess.run(["chattr", "+i", str(path)], check=False).returncode != 0:
        pytest.skip(f"the file system under {path} does not support chattr +i")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def cli_files(config: dict[str, t.Any], tmp_path: Path, streams: set[str] = PROFILE) -> list[str]:
    config_file = write_json(tmp_path / "config.json", config)
    catalog = catalog_file(tmp_path / "catalog.json", config, streams)
    return ["--config", str(config_file), "--catalog", str(catalog)]


def run_killed(args: list[str], kill_after: str) -> subprocess.CompletedProcess[str]:
    """Run the tap in a process that SIGKILLs itself at a chosen moment of a refresh.

    `kill_after`: "token_response", when WHOOP has rotated the token but before the tap reads
    the answer; "temp_file", when the rotated token sits in the temp file, before the rename.
    """
    script = f"""
import os, signal, sys
from tap_whoop.oauth import app as oauth_app
from tap_whoop.stores import file as file_store
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if {kill_after!r} == "token_response":
    request = oauth_app.WhoopApp._token_request
    oauth_app.WhoopApp._token_request = lambda self, *a: (request(self, *a), die())
else:
    put = file_store.TokenStore.put
    def dying_put(self, key, entry):
        os.replace = die
        put(self, key, entry)
    file_store.TokenStore.put = dying_put
sys.argv[0] = "tap-whoop"
from tap_whoop.cli import main
main()
"""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
        check=False,
    )


# 4. A store that can be written but not replaced


def test_a_bind_mounted_store_is_rewritten_in_place_and_keeps_every_rotated_token(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    outside = tmp_path / "host" / "tokens.json"
    outside.parent.mkdir()
    outside.write_bytes(EMPTY_STORE)
    path = store_path(config)
    with bind_mounted(outside, path):
        synced(config)
        expire_access_tokens(config)
        synced(config)
        assert str(path) in Path("/proc/self/mounts").read_text()
        assert json.loads(outside.read_text()) == json.loads(path.read_text())
        assert not orphans(path)
    rotated = json.loads(outside.read_text())["members"]["default"]["refresh_token"]
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (2, 0)
    assert refresh_directly(sandbox, rotated).status_code == 200


def test_an_immutable_store_fails_before_any_token_is_spent(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    path = store_path(config)
    path.parent.mkdir(mode=0o700, parents=True)
    path.write_bytes(EMPTY_STORE)
    args = cli_files(config, tmp_path)
    with immutable(path):
        result = run_cli(*args)
    line = error_line(result)
    assert f"cannot write token store {path}: Operation not permitted" in line
    assert f"chattr -i {path}" in line
    assert "no refresh token was spent" in line
    assert path.read_bytes() == EMPTY_STORE
    assert not orphans(path)
    assert sandbox.stats()["token_requests"] == 0
    assert refresh_directly(sandbox, config["refresh_token"]).status_code == 200


# 5. A symlinked store


def test_a_symlinked_store_is_followed_the_link_stays_and_the_target_is_locked_and_written(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    real = tmp_path / "elsewhere" / "real-tokens.json"
    real.parent.mkdir(mode=0o700)
    real.write_bytes(EMPTY_STORE)
    link = store_path(config)
    link.parent.mkdir(mode=0o700)
    link.symlink_to(real)
    synced(config)
    expire_access_tokens(config)
    synced(config)
    assert link.is_symlink()
    assert link.resolve() == real
    entry = json.loads(real.read_text())["members"]["default"]
    assert sandbox.stats()["refreshes"] == 2
    assert refresh_directly(sandbox, entry["refresh_token"]).status_code == 200
    assert Path(f"{real}.lock").exists()
    assert not Path(f"{link}.lock").exists()
    assert not orphans(real)
    assert not orphans(link)


# 6. A run killed in the middle of a refresh


def test_a_run_killed_before_renaming_its_rotated_token_into_place_is_recovered_by_the_next(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    args = cli_files(config, tmp_path)
    killed = run_killed(args, "temp_file")
    assert killed.returncode == -9, killed.stderr
    path = store_path(config)
    assert len(orphans(path)) == 1
    assert "refresh_token" not in stored(config)["default"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert '"stream":"profile"' in result.stdout.replace(" ", "")
    assert not orphans(path)
    entry = stored(config)["default"]
    assert "refreshing" not in entry
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (1, 0)
    assert refresh_directly(sandbox, entry["refresh_token"]).status_code == 200


def test_a_store_torn_by_a_killed_in_place_write_is_restored_from_its_journal(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    path = store_path(config)
    whole = path.read_bytes()
    (path.parent / ".tokens-journal1").write_bytes(whole)
    path.write_bytes(whole[: len(whole) // 2])
    synced(config)
    assert json.loads(path.read_bytes()) == json.loads(whole)
    assert not orphans(path)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (1, 0)


def test_stale_temp_files_are_removed_and_never_override_a_newer_store(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    synced(config)
    path = store_path(config)
    old = path.read_bytes()
    expire_access_tokens(config)
    synced(config)
    current = stored(config)["default"]["refresh_token"]
    (path.parent / ".tokens-stale001").write_bytes(old)
    (path.parent / ".tokens-garbage1").write_bytes(b"{torn")
    synced(config)
    assert stored(config)["default"]["refresh_token"] == current
    assert not orphans(path)


def test_a_run_killed_after_whoop_rotated_the_token_makes_the_next_run_say_exactly_that(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path
) -> None:
    args = cli_files(config, tmp_path)
    assert run_cli(*args).returncode == 0
    expire_access_tokens(config)
    killed = run_killed(args, "token_response")
    assert killed.returncode == -9, killed.stderr
    before = store_path(config).read_bytes()
    line = error_line(run_cli(*args))
    assert "member 'default': WHOOP rejected the stored refresh token (HTTP 400" in line
    assert "the previous run was interrupted while refreshing it" in line
    assert "the new token never reached the tap" in line
    assert "re-authorizing is the only fix" in line
    assert f"`tap-whoop auth --config {args[1]} --member default`" in line
    assert store_path(config).read_bytes() == before


# 7. Short-lived access tokens


def test_a_sync_with_two_minute_tokens_refreshes_once(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(access_token_ttl=120)
    config = tap_config(sandbox, tmp_path)
    synced(config, ALL_STREAMS)
    stats = sandbox.stats()
    assert stats["requests"] > 10
    assert (stats["token_requests"], stats["refreshes"]) == (1, 1)
    assert stored(config)["default"]["lifetime"] == 120


def _race_taps(
    config: dict[str, t.Any], tmp_path: Path, processes: int, streams: set[str]
) -> list[subprocess.CompletedProcess[str]]:
    args = [*TAP_WHOOP, *cli_files(config, tmp_path, streams)]
    taps = [
        subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
        )
        for _ in range(processes)
    ]
    outputs = [tap.communicate(timeout=180) for tap in taps]
    return [
        subprocess.CompletedProcess(args, tap.returncode, out, err)
        for tap, (out, err) in zip(taps, outputs, strict=True)
    ]


def _record_counts(stdout: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in stdout.splitlines():
        message = json.loads(line)
        if message["type"] == "RECORD":
            counts[message["stream"]] = counts.get(message["stream"], 0) + 1
    return counts


def test_four_processes_sharing_a_store_with_three_second_tokens_all_sync_everything(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(access_token_ttl=3)
    expected = _record_counts(
        run_cli(*cli_files(tap_config(sandbox, tmp_path / "alone"), tmp_path, ALL_STREAMS)).stdout
    )
    assert set(expected) == ALL_STREAMS
    sandbox.reset_stats()
    shared = tap_config(sandbox, tmp_path / "shared")
    shared["refresh_token"] = sandbox.issue_refresh_token("alice")
    results = _race_taps(shared, tmp_path / "shared", 4, ALL_STREAMS)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr[-2000:] for r in results]
    assert [_record_counts(r.stdout) for r in results] == [expected] * 4
    assert sandbox.stats()["invalid_grant"] == 0


# 8. A 401 decided without the lock


def _refresh_under_the_lock(config: dict[str, t.Any], held: Event, done: Event) -> None:
    """Another process: take the lock, then rotate the member's tokens slowly."""
    store = TokenStore(config["token_store_path"])
    app = WhoopApp(CLIENT_ID, CLIENT_SECRET, config["oauth_url"])
    other = MemberAuth("default", config["refresh_token"], store, app)
    with store.locked():
        held.set()
        time.sleep(1.0)
        other.access_token(force_refresh=True)
    done.set()


def test_a_401_waits_for_a_refresh_another_process_holds_the_lock_for_and_adopts_its_token(
    sandbox: Sandbox, config: dict[str, t.Any]
) -> None:
    store = TokenStore(config["token_store_path"])
    app = WhoopApp(CLIENT_ID, CLIENT_SECRET, config["oauth_url"])
    syncing = MemberAuth("default", config["refresh_token"], store, app)
    first = syncing.access_token()
    assert syncing.reject(first)
    retried = syncing.access_token()
    assert retried != first
    context = multiprocessing.get_context("spawn")
    held, done = context.Event(), context.Event()
    other = context.Process(target=_refresh_under_the_lock, args=(config, held, done))
    other.start()
    try:
        assert held.wait(timeout=60)
        assert syncing.reject(retried)
        assert done.is_set()
    finally:
        other.join(timeout=60)
    adopted = syncing.access_token()
    assert adopted == stored(config)["default"]["access_token"]
    assert adopted not in (first, retried)
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (3, 0)


def test_twelve_processes_with_five_second_tokens_never_ask_to_reauthorize(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(access_token_ttl=5)
    started = time.monotonic()
    results = _race_taps(tap_config(sandbox, tmp_path), tmp_path, 12, ALL_STREAMS)
    assert time.monotonic() - started < 90
    assert [r.returncode for r in results] == [0] * 12, [r.stderr[-2000:] for r in results]
    assert not [r for r in results if "re-authorize" in r.stderr]
    assert sandbox.stats()["invalid_grant"] == 0


# One clean line (or none at all) for stores that make no sense


@pytest.mark.parametrize("expires_at", ["1e400", "-1e400", "NaN", "1e300", "-5"])
def test_an_absurd_expiry_just_means_refresh(
    sandbox: Sandbox, config: dict[str, t.Any], expires_at: str
) -> None:
    synced(config)
    path = store_path(config)
    data = json.loads(path.read_text())
    data["members"]["default"]["expires_at"] = "EXPIRY"
    path.write_text(json.dumps(data).replace('"EXPIRY"', expires_at))
    synced(config)
    entry = stored(config)["default"]
    assert math.isfinite(entry["expires_at"])
    assert entry["expires_at"] < time.time() + 7200
    stats = sandbox.stats()
    assert (stats["refreshes"], stats["invalid_grant"]) == (2, 0)


@pytest.mark.parametrize(
    "store", ["/proc/tap-whoop/tokens.json", "/proc/tokens.json", "/proc/self/tap-whoop.json"]
)
def test_a_store_where_no_file_can_be_created_fails_at_once_naming_the_directory(
    sandbox: Sandbox, config: dict[str, t.Any], tmp_path: Path, store: str
) -> None:
    args = cli_files({**config, "token_store_path": store}, tmp_path)
    started = time.monotonic()
    result = run_cli(*args)
    assert time.monotonic() - started < 30
    line = error_line(result)
    named = str(Path(store).parent) in line
    resolved = store.startswith("/proc/self/") and re.search(r" in /proc/\d+ ", line)
    assert named or resolved, line  # /proc/self is named as what it is: the tap's /proc/PID
    assert "cannot create" in line
    assert "locked by another" not in line
    assert sandbox.stats()["token_requests"] == 0


def test_a_store_that_cannot_be_made_private_is_reported_once_with_why(
    config: dict[str, t.Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = store_path(config)
    path.parent.mkdir(mode=0o700)
    path.write_bytes(EMPTY_STORE)
    path.chmod(0o644)

    def refused(*args: t.Any, **kwargs: t.Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(file_store.os, "chmod", refused)
    store = TokenStore(path)
    with caplog.at_level(logging.WARNING, logger="tap-whoop.auth"):
        for _ in range(3):
            store.read()
    warnings = [m for m in caplog.messages if "readable by other users" in m]
    assert len(warnings) == 1, warnings
    assert "could not be set to 0600 (Operation not permitted)" in warnings[0]
