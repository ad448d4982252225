"""Every stream's schema carries every field of WHOOP's official v2 spec, with compatible types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tap_whoop.schemas import BODY_MEASUREMENT, CYCLE, PROFILE, RECOVERY, SLEEP, WORKOUT

SPEC_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "whoop-openapi.json"

STREAM_COMPONENTS = {
    "profile": (PROFILE, "UserBasicProfile"),
    "body_measurement": (BODY_MEASUREMENT, "UserBodyMeasurement"),
    "cycles": (CYCLE, "Cycle"),
    "cycle_by_id": (CYCLE, "Cycle"),
    "recovery": (RECOVERY, "Recovery"),
    "recovery_for_cycle": (RECOVERY, "Recovery"),
    "sleep": (SLEEP, "Sleep"),
    "sleep_for_cycle": (SLEEP, "Sleep"),
    "sleep_by_id": (SLEEP, "Sleep"),
    "workout": (WORKOUT, "WorkoutV2"),
    "workout_by_id": (WORKOUT, "WorkoutV2"),
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
    if not SPEC_PATH.exists():
        pytest.fail(f"WHOOP's OpenAPI spec is expected at {SPEC_PATH} (../shared/ beside the repo)")
    return json.loads(SPEC_PATH.read_text())["components"]["schemas"]


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


@pytest.mark.parametrize("stream", sorted(STREAM_COMPONENTS))
def test_schema_covers_spec(stream: str, components: dict) -> None:
    schema, component = STREAM_COMPONENTS[stream]
    assert _mismatches(schema, components[component], components, stream) == []


def test_the_check_catches_a_missing_field(components: dict) -> None:
    broken = json.loads(json.dumps(CYCLE))
    del broken["properties"]["score"]["properties"]["strain"]
    broken["properties"]["end"]["type"] = ["string"]
    problems = _mismatches(broken, components["Cycle"], components, "cycles")
    assert problems == [
        "cycles.end: WHOOP may omit it, so it must be nullable",
        "cycles.score.strain missing",
    ]


def test_streams_use_these_schemas() -> None:
    from tap_whoop.tap import TapWhoop

    tap = TapWhoop(config={"client_id": "x", "client_secret": "y", "refresh_token": "z"})
    assert set(tap.streams) == set(STREAM_COMPONENTS)
    for name, stream in tap.streams.items():
        expected = STREAM_COMPONENTS[name][0]
        for field in expected["properties"]:
            assert field in stream.schema["properties"], (name, field)
