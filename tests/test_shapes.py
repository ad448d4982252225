"""The state and catalog shapes are JSON Schema: what the tap writes passes, a damaged one is told.

The messages themselves, through the real CLI, are in test_bad_input.py.
"""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from tap_whoop.shapes import CATALOG_SCHEMA, STATE_SCHEMA, catalog_problem, state_problem
from tap_whoop.tap import TapWhoop

CONFIG = {"client_id": "id", "client_secret": "secret", "refresh_token": "token"}


@pytest.mark.parametrize("schema", [STATE_SCHEMA, CATALOG_SCHEMA], ids=["state", "catalog"])
def test_the_shapes_are_valid_json_schema(schema: dict) -> None:
    Draft202012Validator.check_schema(schema)


def test_the_catalog_the_tap_discovers_passes_its_own_check() -> None:
    assert catalog_problem(TapWhoop(config=CONFIG).catalog_dict) is None


def test_a_state_with_every_field_the_tap_keeps_passes() -> None:
    partition = {
        "context": {"user_id": 1},
        "replication_key": "start",
        "replication_key_value": "2026-01-01T00:00:00Z",
        "progress_markers": {},
        "backfill_start": "2020-01-01T00:00:00+00:00",
        "backfill_end": "2025-01-01T00:00:00Z",
        "polled_at": None,
        "read_at": "2026-01-01T00:00:00Z",
        "window_ids": [["a1b2", "2026-01-01T00:00:00Z"], [7, "2026-01-02T00:00:00Z"]],
    }
    state = {"bookmarks": {"cycles": {"partitions": [partition]}}, "whoop_webhooks": {}}
    assert state_problem(state) is None


def test_of_several_problems_the_first_entrys_first_is_told() -> None:
    catalog = {"streams": [{"tap_stream_id": "x", "schema": {}}] * 10 + [{"schema": 1}, 2]}
    assert catalog_problem(catalog) == (
        "streams[10] has no 'tap_stream_id' (a stream name): fix it, or regenerate it with "
        "--discover"
    )


def test_a_window_id_that_is_a_boolean_is_not_an_id() -> None:
    partition = {"context": {}, "window_ids": [[True, "2026-01-01T00:00:00Z"]]}
    problem = state_problem({"bookmarks": {"cycles": {"partitions": [partition]}}})
    assert problem is not None
    assert problem.startswith("the state's window_ids for cycles are not [id, date-time] pairs")
