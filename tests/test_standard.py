"""The Singer SDK's standard tap tests, against a sandbox served on loopback for this module."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import typing as t
from pathlib import Path

from conftest import CLIENT_ID, CLIENT_SECRET, NOW
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_whoop.tap import TapWhoop
from whoop_sandbox import Sandbox, SandboxServer

_SANDBOX = Sandbox(members=("alice",), history_days=30, now=NOW, per_minute=None, per_day=None)
_SERVER = SandboxServer(_SANDBOX).start()
_STORE_DIR = Path(tempfile.mkdtemp(prefix="tap-whoop-standard-"))


def _stop() -> None:
    _SERVER.stop()
    shutil.rmtree(_STORE_DIR, ignore_errors=True)


atexit.register(_stop)


def _samples(kind: str, *optional: str) -> list[t.Any]:
    """A few ids of `kind`, including records that carry each optional field."""
    records = _SANDBOX.records("alice", kind)
    chosen = records[:2] + [next(r for r in records if field in r) for field in optional]
    return list(dict.fromkeys(record["id"] for record in chosen))


SAMPLE_CYCLES = _samples("cycle")
SAMPLE_SLEEPS = _samples("sleep", "v1_id")
SAMPLE_WORKOUTS = _samples("workout", "v1_id", "sport_id")

CONFIG = {
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
    "refresh_token": _SANDBOX.seed_refresh_token("alice"),
    "api_url": _SERVER.api_url,
    "oauth_url": _SERVER.oauth_url,
    "token_store_path": str(_STORE_DIR / "tokens.json"),
    "max_requests_per_minute": 100_000,
    "cycle_ids": SAMPLE_CYCLES,
    "sleep_ids": SAMPLE_SLEEPS,
    "workout_ids": SAMPLE_WORKOUTS,
    "sleep_signal_types": ["hr"],
}


def _catalog_selecting_everything() -> dict:
    """The SDK's dry run forces every stream on; the tests' own tap must agree.

    `get_tap_test_class` syncs with every stream selected (`run_sync_dry_run`) but checks the
    records against streams of a tap built from the default catalog, where the opt-in
    drill-downs (per-cycle and by-id streams) are deselected and so have an empty transformed
    schema. Selecting everything in the catalog makes both sides the same tap.
    """
    catalog = TapWhoop(config=CONFIG, validate_config=False).catalog_dict
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = True
    return catalog


TestTapWhoop = get_tap_test_class(
    TapWhoop,
    config=CONFIG,
    catalog=_catalog_selecting_everything(),
    # Every stream, the drill-downs included, must return records from the sandbox.
    suite_config=SuiteConfig(max_records_limit=None, ignore_no_records=False),
)
