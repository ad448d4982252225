"""Every stream's announced schema carries every field of WHOOP's official v2 spec."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from tap_whoop.tap import TapWhoop

SPEC_ENV = "TAP_WHOOP_OPENAPI_SPEC"
DEFAULT_SPEC_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "whoop-openapi.json"

STREAM_COMPONENTS = {
    "profile": "UserBasicProfile",
    "body_measurement": "UserBodyMeasurement",
    "cycles": "Cycle",
    "cycle_by_id": "Cycle",
    "recovery": "Recovery",
    "recovery_for_cycle": "Recovery",
    "sleep": "Sleep",
    "sleep_for_cycle": "Sleep",
    "sleep_by_id": "Sleep",
    "workout": "WorkoutV2",
    "workout_by_id": "WorkoutV2",
}

# JSON Schema types a target may load each OpenAPI type into without losing anything.
COMPATIBLE = {
    "integer": {"integer"},
    "number": {"number"},
    "string": {"string"},
    "boolean": {"boolean"},
    "object": {"object"},
}


@pytest.fixture(scope="module")
def components() -> dict:
    """The spec's component schemas, from $TAP_WHOOP_OPENAPI_SPEC or ../shared/."""
    override = os.environ.get(SPEC_ENV)
    path = Path(override) if override else DEFAULT_SPEC_PATH
    if not path.is_file():
        pytest.fail(
            f"WHOOP's OpenAPI spec not found at {path}: put it at {DEFAULT_SPEC_PATH} "
            f"(../shared/whoop-openapi.json beside the repo) or set {SPEC_ENV} to its path",
            pytrace=False,
        )
    return json.loads(path.read_text())["components"]["schemas"]


@pytest.fixture(scope="module")
def tap() -> TapWhoop:
    """The tap as a user runs it, so the tests see the schemas it announces."""
    config = {"client_id": "x", "client_secret": "y", "refresh_token": "z"}
    return TapWhoop(config=config, validate_config=False)


def _resolve(spec: dict, components: dict) -> dict:
    if "$ref" in spec:
        return components[spec["$ref"].rsplit("/", 1)[-1]]
    return spec


def _mismatches(ours: dict, spec: dict, components: dict, where: str) -> list[str]:
    spec = _resolve(spec, components)
    problems = []
    required = set(spec.get("required", []))
    for name, prop in spec.get("properties", {}).items():
        here = f"{where}.{name}"
        if name not in ours.get("properties", {}):
            problems.append(f"{here} missing")
            continue
        mine = ours["properties"][name]
        prop = _resolve(prop, components)
        spec_type = prop.get("type", "object")
        my_types = set(mine["type"]) if isinstance(mine["type"], list) else {mine["type"]}
        if not (COMPATIBLE[spec_type] & my_types):
            problems.append(f"{here}: spec {spec_type}, schema {sorted(my_types)}")
        if prop.get("format") in ("date-time", "uuid") and mine.get("format") != prop["format"]:
            problems.append(f"{here}: format should be {prop['format']}")
        if (name not in required or prop.get("nullable")) and "null" not in my_types:
            problems.append(f"{here}: WHOOP may omit it, so it must be nullable")
        if spec_type == "object":
            problems += _mismatches(mine, prop, components, here)
    return problems


def test_the_tap_announces_exactly_these_streams(tap: TapWhoop) -> None:
    assert set(tap.streams) == set(STREAM_COMPONENTS)


@pytest.mark.parametrize("stream", sorted(STREAM_COMPONENTS))
def test_schema_covers_spec(stream: str, components: dict, tap: TapWhoop) -> None:
    schema = tap.streams[stream].schema
    component = STREAM_COMPONENTS[stream]
    assert _mismatches(schema, components[component], components, stream) == []


def test_the_check_catches_a_missing_field(components: dict, tap: TapWhoop) -> None:
    broken = copy.deepcopy(tap.streams["cycles"].schema)
    del broken["properties"]["score"]["properties"]["strain"]
    broken["properties"]["end"]["type"] = ["string"]
    problems = _mismatches(broken, components["Cycle"], components, "cycles")
    assert problems == [
        "cycles.end: WHOOP may omit it, so it must be nullable",
        "cycles.score.strain missing",
    ]
