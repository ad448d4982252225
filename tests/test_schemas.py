"""Every stream's announced schema carries every field of WHOOP's official v2 spec.

The stream schemas are checked against tests/whoop_spec_digest.json, a digest of the spec's
fields committed with the tests, so they run on a fresh clone. The digest is checked against
the spec itself ($TAP_WHOOP_OPENAPI_SPEC, else ../shared/whoop-openapi.json) whenever it is
present; `python scripts/spec_digest.py --output tests/whoop_spec_digest.json` regenerates it.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tap_whoop.tap import TapWhoop

REPO = Path(__file__).resolve().parents[1]
DIGEST_PATH = Path(__file__).resolve().parent / "whoop_spec_digest.json"


def _load_script() -> ModuleType:
    """scripts/spec_digest.py, which is no package: loaded from its path."""
    path = REPO / "scripts" / "spec_digest.py"
    spec = importlib.util.spec_from_file_location("spec_digest", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


spec_digest = _load_script()
SPEC_ENV = spec_digest.SPEC_ENV
DEFAULT_SPEC_PATH = spec_digest.DEFAULT_SPEC_PATH

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
    "array": {"array"},
}


@pytest.fixture(scope="module")
def digest_text() -> str:
    """The committed digest, as the file holds it."""
    return DIGEST_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def components(digest_text: str) -> dict:
    """The digest's components: field path -> type, format, enum, required, nullable."""
    return json.loads(digest_text)["components"]


@pytest.fixture(scope="module")
def tap() -> TapWhoop:
    """The tap as a user runs it, so the tests see the schemas it announces."""
    config = {"client_id": "x", "client_secret": "y", "refresh_token": "z"}
    return TapWhoop(config=config, validate_config=False)


def _lookup(ours: dict, path: str) -> dict | None:
    """The JSON schema of a digest field path (`score.strain`, `list[].name`) in ours."""
    node: dict | None = ours
    for part in path.split("."):
        name = part.removesuffix("[]")
        node = (node or {}).get("properties", {}).get(name)
        if node is None:
            return None
        if part.endswith("[]"):
            node = node.get("items", {})
    return node


def _mismatches(ours: dict, fields: dict, where: str) -> list[str]:
    """How the JSON schema `ours` falls short of a digest component's `fields`."""
    problems = []
    missing: list[str] = []
    for path, field in sorted(fields.items()):
        here = f"{where}.{path}"
        if any(path.startswith((f"{gone}.", f"{gone}[].")) for gone in missing):
            continue  # reported once, at the missing parent
        mine = _lookup(ours, path)
        if mine is None:
            problems.append(f"{here} missing")
            missing.append(path)
            continue
        spec_type = field["type"]
        my_types = set(mine["type"]) if isinstance(mine["type"], list) else {mine["type"]}
        if not (COMPATIBLE[spec_type] & my_types):
            problems.append(f"{here}: spec {spec_type}, schema {sorted(my_types)}")
        if field.get("format") in ("date-time", "uuid") and mine.get("format") != field["format"]:
            problems.append(f"{here}: format should be {field['format']}")
        if (not field["required"] or field["nullable"]) and "null" not in my_types:
            problems.append(f"{here}: WHOOP may omit it, so it must be nullable")
        if "enum" in mine and set(field.get("enum", [])) - set(mine["enum"]):
            problems.append(f"{here}: enum should allow {field['enum']}")
    return problems


#: Streams checked against the 2026-08 spec's digest (tests/whoop_spec_digest_2026_08.json).
SIGNALS_STREAM_COMPONENTS = {"sleep_signals": "SleepStreamResponse"}


def test_the_tap_announces_exactly_these_streams(tap: TapWhoop) -> None:
    assert set(tap.streams) == set(STREAM_COMPONENTS) | set(SIGNALS_STREAM_COMPONENTS)


@pytest.fixture(scope="module")
def signals_digest_text() -> str:
    """The committed digest of the 2026-08 spec's sleep signal stream."""
    return spec_digest.SIGNALS_DIGEST_PATH.read_text(encoding="utf-8")


def test_the_sleep_signals_schema_covers_the_2026_08_spec(
    signals_digest_text: str, tap: TapWhoop
) -> None:
    components = json.loads(signals_digest_text)["components"]
    assert set(components) == set(SIGNALS_STREAM_COMPONENTS.values())
    assert set(spec_digest.SIGNALS_COMPONENTS) == set(components)
    for stream, component in SIGNALS_STREAM_COMPONENTS.items():
        fields = components[component]
        assert "stream[].hr" in fields, "a digest without the points: regenerate it"
        assert _mismatches(tap.streams[stream].schema, fields, stream) == []


def test_the_check_catches_a_signal_the_spec_gains(signals_digest_text: str, tap: TapWhoop) -> None:
    grown = dict(json.loads(signals_digest_text)["components"]["SleepStreamResponse"])
    grown["stream[].spo2"] = {"nullable": False, "required": False, "type": "number"}
    problems = _mismatches(tap.streams["sleep_signals"].schema, grown, "sleep_signals")
    assert problems == ["sleep_signals.stream[].spo2 missing"]


def test_the_signals_digest_matches_whoops_2026_08_spec(signals_digest_text: str) -> None:
    """The committed digest is what `spec_digest.py --sleep-stream` makes of the spec."""
    path = Path(spec_digest.signals_spec())
    if not path.is_file():
        pytest.skip(
            f"WHOOP's 2026-08 OpenAPI spec not found at {path} (put it at "
            f"{spec_digest.SIGNALS_SPEC_PATH} or set {spec_digest.SIGNALS_SPEC_ENV}): the "
            "committed digest was not compared with it"
        )
    spec = spec_digest.load_spec(str(path))
    fresh = spec_digest.render(
        spec_digest.build_digest(spec, spec_digest.SIGNALS_COMPONENTS, spec_digest.SIGNALS_COMMAND)
    )
    assert fresh == signals_digest_text, (
        f"{spec_digest.SIGNALS_DIGEST_PATH.name} differs from {path}; regenerate it with "
        f"`{spec_digest.SIGNALS_COMMAND}` and review the diff:\n"
        f"{spec_digest.diff(signals_digest_text, fresh)}"
    )


def test_the_script_reads_yaml_specs(tmp_path: Path) -> None:
    yaml_spec = tmp_path / "spec.yml"
    yaml_spec.write_text(
        "openapi: 3.0.1\ninfo: {title: Toy, version: '1'}\ncomponents:\n  schemas:\n"
        "    Point:\n      type: object\n      properties:\n"
        "        hr: {type: integer, format: int32}\n"
    )
    digest = spec_digest.build_digest(spec_digest.load_spec(str(yaml_spec)), ("Point",))
    assert digest["components"] == {
        "Point": {
            "hr": {"format": "int32", "nullable": False, "required": False, "type": "integer"}
        }
    }
    yaml_spec.write_text("components: [unclosed\n")
    assert spec_digest.main([str(yaml_spec)]) == 2


def test_the_digest_holds_exactly_the_streams_components(components: dict) -> None:
    assert set(components) == set(STREAM_COMPONENTS.values()) == set(spec_digest.COMPONENTS)
    assert all(components.values()), "a component without fields: regenerate the digest"


@pytest.mark.parametrize("stream", sorted(STREAM_COMPONENTS))
def test_schema_covers_spec(stream: str, components: dict, tap: TapWhoop) -> None:
    schema = tap.streams[stream].schema
    component = STREAM_COMPONENTS[stream]
    assert _mismatches(schema, components[component], stream) == []


def test_the_check_catches_a_missing_field(components: dict, tap: TapWhoop) -> None:
    broken = copy.deepcopy(tap.streams["cycles"].schema)
    del broken["properties"]["score"]["properties"]["strain"]
    broken["properties"]["end"]["type"] = ["string"]
    problems = _mismatches(broken, components["Cycle"], "cycles")
    assert problems == [
        "cycles.end: WHOOP may omit it, so it must be nullable",
        "cycles.score.strain missing",
    ]


def test_the_check_catches_a_field_the_spec_gains(components: dict, tap: TapWhoop) -> None:
    grown = copy.deepcopy(components["Sleep"])
    grown["score.stage_summary.total_nap_time_milli"] = {
        "format": "int32",
        "nullable": False,
        "required": True,
        "type": "integer",
    }
    grown["hrv"] = {"nullable": True, "required": False, "type": "object"}
    grown["hrv.rmssd"] = {"nullable": False, "required": True, "type": "number"}
    grown["score_state"]["enum"] = [*grown["score_state"]["enum"], "RESCORING"]
    grown["id"]["type"] = "integer"
    problems = _mismatches(tap.streams["sleep"].schema, grown, "sleep")
    assert problems == [
        "sleep.hrv missing",
        "sleep.id: spec integer, schema ['string']",
        "sleep.score.stage_summary.total_nap_time_milli missing",
        "sleep.score_state: enum should allow ['SCORED', 'PENDING_SCORE', 'UNSCORABLE', "
        "'RESCORING']",
    ]


def test_the_digest_matches_whoops_spec(digest_text: str) -> None:
    """The committed digest is what scripts/spec_digest.py makes of the spec, when present."""
    override = os.environ.get(SPEC_ENV)
    path = Path(override) if override else DEFAULT_SPEC_PATH
    if not path.is_file():
        pytest.skip(
            f"WHOOP's OpenAPI spec not found at {path} (put it at {DEFAULT_SPEC_PATH} or set "
            f"{SPEC_ENV}): the committed digest was not compared with it; the stream schemas "
            "were still checked against the digest"
        )
    fresh = spec_digest.render(spec_digest.build_digest(spec_digest.load_spec(str(path))))
    assert fresh == digest_text, (
        f"tests/whoop_spec_digest.json differs from {path}; regenerate it with "
        f"`{spec_digest.COMMAND}` and review the diff:\n{spec_digest.diff(digest_text, fresh)}"
    )


# The script, on a small spec using what WHOOP's does and may: $ref, allOf, oneOf, arrays, cycles.
TOY_SPEC = {
    "openapi": "3.0.1",
    "info": {"title": "Toy", "version": "1"},
    "components": {
        "schemas": {
            "Base": {
                "type": "object",
                "required": ["id"],
                "properties": {"id": {"type": "string", "format": "uuid"}},
            },
            "Score": {
                "type": "object",
                "required": ["strain"],
                "properties": {
                    "strain": {"type": "number", "format": "float"},
                    "zones": {"type": "array", "items": {"$ref": "#/components/schemas/Zone"}},
                },
            },
            "Zone": {
                "type": "object",
                "required": ["milli"],
                "properties": {"milli": {"type": "integer", "format": "int64"}},
            },
            "Run": {
                "allOf": [
                    {"$ref": "#/components/schemas/Base"},
                    {
                        "type": "object",
                        "required": ["state"],
                        "properties": {
                            "state": {"type": "string", "enum": ["A", "B"]},
                            "score": {"$ref": "#/components/schemas/Score"},
                            "note": {"type": "string", "nullable": True},
                        },
                    },
                ]
            },
            "Either": {
                "oneOf": [
                    {"$ref": "#/components/schemas/Run"},
                    {"$ref": "#/components/schemas/Base"},
                ]
            },
            # Like the spec's Appointment and BasicAppointment: each refers to the other.
            "Ping": {
                "allOf": [
                    {"$ref": "#/components/schemas/Pong"},
                    {"type": "object", "properties": {"ping": {"type": "boolean"}}},
                ]
            },
            "Pong": {"oneOf": [{"$ref": "#/components/schemas/Ping"}]},
            "Tree": {
                "type": "object",
                "properties": {"child": {"$ref": "#/components/schemas/Tree"}},
            },
        }
    },
}


def test_the_script_follows_refs_and_merges_allof_and_oneof() -> None:
    digest = spec_digest.build_digest(TOY_SPEC, ("Run", "Either"))
    run = {
        "id": {"format": "uuid", "nullable": False, "required": True, "type": "string"},
        "note": {"nullable": True, "required": False, "type": "string"},
        "score": {"nullable": False, "required": False, "type": "object"},
        "score.strain": {"format": "float", "nullable": False, "required": True, "type": "number"},
        "score.zones": {
            "items": {"type": "object"},
            "nullable": False,
            "required": False,
            "type": "array",
        },
        "score.zones[].milli": {
            "format": "int64",
            "nullable": False,
            "required": True,
            "type": "integer",
        },
        "state": {"enum": ["A", "B"], "nullable": False, "required": True, "type": "string"},
    }
    assert digest["components"]["Run"] == run
    # Only what every alternative requires is required.
    assert digest["components"]["Either"] == {**run, "state": {**run["state"], "required": False}}
    assert digest["about"]["spec"] == {
        "openapi": "3.0.1",
        "title": "Toy",
        "version": "1",
        "published_at": spec_digest.PUBLISHED_SPEC_URL,
    }
    # A cycle of $refs through allOf and oneOf ends; one through properties can't be flattened.
    ping = {"nullable": False, "required": False, "type": "boolean"}
    pings = spec_digest.build_digest(TOY_SPEC, ("Ping", "Pong"))["components"]
    assert pings == {"Ping": {"ping": ping}, "Pong": {"ping": ping}}
    with pytest.raises(ValueError, match="recursive"):
        spec_digest.build_digest(TOY_SPEC, ("Tree",))


def test_the_walk_reaches_array_items() -> None:
    fields = spec_digest.build_digest(TOY_SPEC, ("Run",))["components"]["Run"]
    ours = {
        "type": "object",
        "properties": {
            "id": {"type": ["string"], "format": "uuid"},
            "note": {"type": ["string", "null"]},
            "state": {"type": ["string"], "enum": ["A", "B"]},
            "score": {
                "type": ["object", "null"],
                "properties": {
                    "strain": {"type": ["number"]},
                    "zones": {"type": ["array", "null"], "items": {"properties": {}}},
                },
            },
        },
    }
    assert _mismatches(ours, fields, "run") == ["run.score.zones[].milli missing"]


def test_the_script_writes_and_checks_the_digest(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TOY_SPEC))
    digest = tmp_path / "digest.json"
    toy = ["--component", "Run"]
    assert spec_digest.main([str(spec), *toy, "--output", str(digest)]) == 0
    written = digest.read_text()
    assert written == spec_digest.render(spec_digest.build_digest(TOY_SPEC, ("Run",)))
    assert json.loads(written)["components"]["Run"]["state"]["enum"] == ["A", "B"]
    assert spec_digest.main([str(spec), *toy, "--check", "--output", str(digest)]) == 0

    digest.write_text(written.replace('"score.strain"', '"score.effort"'))
    assert spec_digest.main([str(spec), *toy, "--check", "--output", str(digest)]) == 1
    out = capsys.readouterr().out
    assert '-      "score.effort": {' in out
    assert '+      "score.strain": {' in out

    assert spec_digest.main([str(tmp_path / "absent.json"), *toy]) == 2
    assert spec_digest.main([str(spec), "--component", "Nope"]) == 2
