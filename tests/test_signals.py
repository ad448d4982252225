"""A stop says it stopped: SIGTERM and SIGINT end the tap within seconds, resumably, non-zero.

A scheduler that kills a job on a timeout, or a person pressing Ctrl-C, must see a failed run
(143, 130), and the next run must go on from the last STATE without reading again what was
delivered. Real `tap-whoop` processes, real signals, the sandbox over loopback.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import typing as t

import pytest
from auth_support import TAP_WHOOP, cli_env, write_json
from conftest import PAST, run_tap, tap_config

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from whoop_sandbox import Sandbox

WORKOUTS = "/v2/activity/workout"


class Tap:
    """`tap-whoop --config …` writing to a file, signalled from the test."""

    def __init__(self, config: Path, out: Path, err: Path) -> None:
        self.out, self.err = out, err
        self.process = subprocess.Popen(
            [*TAP_WHOOP, "--config", str(config)],
            stdout=out.open("wb"),
            stderr=err.open("wb"),
            env=cli_env(TAP_WHOOP_LOGLEVEL="INFO"),
        )

    def wait_for(self, found: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not found():
            assert self.process.poll() is None, f"the tap ended before {what}"
            assert time.monotonic() < deadline, f"no {what} within {timeout}s"
            time.sleep(0.05)

    def stop(self, signum: int) -> tuple[int, float]:
        """Send `signum`; the exit code, and the seconds it took to exit."""
        sent = time.monotonic()
        self.process.send_signal(signum)
        code = self.process.wait(timeout=60)
        return code, time.monotonic() - sent

    def messages(self) -> list[dict[str, t.Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def errors(self) -> list[str]:
        return [line for line in self.err.read_text().splitlines() if "error" in line.lower()]


def workout_ids(messages: list[dict[str, t.Any]]) -> list[str]:
    return [
        m["record"]["id"]
        for m in messages
        if m["type"] == "RECORD" and m["stream"] == "workout" and not m["record"]["_sdc_deleted_at"]
    ]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_history_stops_at_the_next_page_and_the_next_run_goes_on_from_there(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path, signum: int, code: int
) -> None:
    sandbox = start_sandbox(now=PAST, history_days=400)
    sandbox.fault_delay = 0.3  # each workout page takes a moment: the signal lands mid-walk
    sandbox.inject_fault(WORKOUTS, "timeout", times=1000)
    config = tap_config(sandbox, tmp_path)
    tap = Tap(write_json(tmp_path / "config.json", config), tmp_path / "out", tmp_path / "err")
    # two pages delivered: a stop after one page costs the next run what starting over would
    tap.wait_for(
        lambda: tap.out.read_text().count('"type":"RECORD","stream":"workout"') > 25,
        "a second page of workouts",
    )

    exit_code, seconds = tap.stop(signum)

    assert exit_code == code, tap.err.read_text()[-2000:]
    assert seconds < 20, seconds  # the walk left would take minutes; a loaded machine, seconds
    name = signal.Signals(signum).name
    assert tap.errors()[-1].startswith(f"tap-whoop: error: stopped by {name}: the last STATE")
    assert "Traceback" not in tap.err.read_text()
    first = tap.messages()
    states = [m["value"] for m in first if m["type"] == "STATE"]
    delivered = workout_ids(first)
    everything = {w["id"] for w in sandbox.records("alice", "workout")}
    assert 0 < len(delivered) < len(everything)
    pages_for_all = -(-len(everything) // 25)

    sandbox.clear_faults()
    sandbox.reset_stats()
    second = run_tap(config, state=states[-1])

    assert second.error is None, second.error
    assert set(delivered) | {r["id"] for r in second.records("workout")} == everything
    read_again = set(delivered) & {r["id"] for r in second.records("workout")}
    assert len(read_again) < 25, "no more than the lookback's page of what was delivered"
    assert sandbox.stats()["by_path"][WORKOUTS] < pages_for_all


def test_ctrl_c_during_a_retrys_backoff_stops_at_once_with_130(
    start_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    sandbox = start_sandbox(now=PAST)
    sandbox.inject_fault(WORKOUTS, "503", times=1000)
    config = tap_config(sandbox, tmp_path, max_request_attempts=10)
    tap = Tap(write_json(tmp_path / "config.json", config), tmp_path / "out", tmp_path / "err")
    tap.wait_for(lambda: "Retrying workout" in tap.err.read_text(), "retry")
    time.sleep(0.2)  # into the backoff's sleep (1 s, 2 s, 4 s … without the stop)

    exit_code, seconds = tap.stop(signal.SIGINT)

    assert exit_code == 130, tap.err.read_text()[-2000:]
    assert seconds < 10, seconds  # the backoffs left (2 s, 4 s, 8 s …) would take minutes
    assert tap.errors()[-1].startswith("tap-whoop: error: stopped by SIGINT")
    assert "Traceback" not in tap.err.read_text()
    assert [m for m in tap.messages() if m["type"] == "STATE"], "a state to resume from"


def test_a_signal_while_the_sdk_builds_the_tap_reaches_the_taps_handler_not_the_sdks_exit_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK's constructor installs handlers that exit 0; one arriving then waits for ours."""
    from singer_sdk.plugin_base import PluginBase

    from tap_whoop import stop
    from tap_whoop.tap import TapWhoop

    sdk_handled: list[int] = []
    sdk_install = PluginBase._setup_signal_handlers

    def sdk_install_then_signal(self: PluginBase) -> None:
        sdk_install(self)
        monkeypatch.setattr(
            self, "_handle_termination", lambda signum, _: sdk_handled.append(signum)
        )
        signal.signal(signal.SIGTERM, self._handle_termination)
        signal.raise_signal(signal.SIGTERM)  # held until the tap's own handler is in place

    saved = {signum: signal.getsignal(signum) for signum in stop.SIGNALS}
    monkeypatch.setattr(PluginBase, "_setup_signal_handlers", sdk_install_then_signal)
    try:
        TapWhoop(config={"client_id": "id", "client_secret": "secret", "refresh_token": "r"})
        assert sdk_handled == []
        assert stop.STOP.signal == signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) is stop._handle
    finally:
        stop.STOP.reset()
        for signum, handler in saved.items():
            signal.signal(signum, handler)
