"""hub/tap-whoop.yml, the tap's Meltano Hub plugin definition, against the Hub and the tap.

The definition must be one the Hub accepts (its own JSON schemas, committed in
tests/hub_schemas/ with their license, so a fresh clone needs nothing else) and must say what
the tap says: `tap-whoop --about --format json` for settings, kinds, secrets, defaults,
capabilities and Python versions; `tap-whoop --discover` for which streams are selected by default.
"""

from __future__ import annotations

import copy
import filecmp
import json
import os
import re
import subprocess
import sys
import typing as t
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7

from tap_whoop import USER_AGENT

ROOT = Path(__file__).resolve().parents[1]
DEFINITION = ROOT / "hub" / "tap-whoop.yml"
SCHEMAS = ROOT / "tests" / "hub_schemas"
HUB_EXAMPLE = SCHEMAS / "examples" / "tap-github--meltanolabs.yml"
#: The Hub's own files, beside the checkout on machines that have them (not in a fresh clone).
SHARED_HUB = ROOT.parent / "shared" / "meltano-hub"
BIN = Path(sys.executable).parent

#: The streams that cost a request per cycle or per id, kept off by the definition's select rules.
DRILL_DOWNS = {
    "recovery_for_cycle",
    "sleep_for_cycle",
    "sleep_signals",
    "cycle_by_id",
    "sleep_by_id",
    "workout_by_id",
}

#: JSON Schema type of a setting -> Meltano setting kind. Numbers are declared as text
#: (NUMBERS_AS_TEXT): Meltano 4.4 casts a `decimal` setting given by environment variable to
#: Python's Decimal and then fails to write the plugin's config ("Object of type Decimal is not
#: JSON serializable"); the tap reads a number from text itself.
NUMBERS_AS_TEXT = "string"
KINDS = {
    "string": "string",
    "integer": "integer",
    "number": NUMBERS_AS_TEXT,
    "boolean": "boolean",
    "array": "array",
    "object": "object",
}


def load_yaml(path: Path) -> dict[str, t.Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


# The Hub's JSON schema


def schema_files(folder: Path) -> dict[str, Path]:
    """The Hub's schema files under `folder`, by file name (the names are unique)."""
    files = sorted(folder.glob("*/*.schema.json"))
    by_name = {path.name: path for path in files}
    assert len(by_name) == len(files), f"two schema files share a name in {folder}"
    return by_name


def extractor_validator(folder: Path = SCHEMAS) -> jsonschema.Draft7Validator:
    """A validator for extractor definitions, its `$ref`s resolved among the files in `folder`.

    The schemas' `$id`s are relative and not consistent with their folders (`extractors.schema.json`
    refers to `../common/common.schema.json`, whose `$id` is `common/common.schema.json`), so
    every reference resolves by file name, the way the Hub's layout means it.
    """
    files = schema_files(folder)

    def retrieve(uri: str) -> Resource[t.Any]:
        path = files.get(uri.rsplit("/", 1)[-1])
        if path is None:
            raise NoSuchResource(ref=uri)
        return Resource.from_contents(
            json.loads(path.read_text(encoding="utf-8")), default_specification=DRAFT7
        )

    root = retrieve("extractors.schema.json")
    registry: Registry[t.Any] = Registry(retrieve=retrieve)
    return jsonschema.Draft7Validator(
        root.contents,
        registry=registry,
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
    )


def hub_errors(definition: dict[str, t.Any]) -> list[str]:
    """What the Hub's schema says is wrong with `definition`, one line each."""
    return sorted(
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in extractor_validator().iter_errors(definition)
    )


def test_definition_is_valid_for_the_hub() -> None:
    assert hub_errors(load_yaml(DEFINITION)) == []


def test_the_hubs_own_example_is_valid() -> None:
    """The validator accepts a definition from the Hub itself (so its $refs resolve)."""
    assert hub_errors(load_yaml(HUB_EXAMPLE)) == []


def _with_bad_kind(definition: dict[str, t.Any]) -> None:
    definition["settings"][0]["kind"] = "secret"


def _with_unknown_key(definition: dict[str, t.Any]) -> None:
    definition["maintainer"] = "someone"


def _without_quality(definition: dict[str, t.Any]) -> None:
    del definition["quality"]


def _with_bad_capability(definition: dict[str, t.Any]) -> None:
    definition["capabilities"].append("incremental")


def _with_bad_python(definition: dict[str, t.Any]) -> None:
    definition["supported_python_versions"].append("python3.15")


@pytest.mark.parametrize(
    ("spoil", "where"),
    [
        (_with_bad_kind, "settings/0/kind"),  # base_setting.schema.json, two $refs down
        (_with_unknown_key, "(top)"),  # extractors.schema.json's additionalProperties
        (_without_quality, "(top)"),
        # extractors_specific.schema.json; the index is the appended one's
        (_with_bad_capability, f"capabilities/{len(load_yaml(DEFINITION)['capabilities'])}"),
        (_with_bad_python, "supported_python_versions/5"),  # common.schema.json
    ],
    ids=["bad-kind", "unknown-key", "no-quality", "bad-capability", "bad-python-version"],
)
def test_the_validator_rejects_what_the_hub_rejects(
    spoil: t.Callable[[dict[str, t.Any]], None], where: str
) -> None:
    definition = copy.deepcopy(load_yaml(DEFINITION))
    spoil(definition)
    errors = hub_errors(definition)
    assert errors, "the validator accepted a definition the Hub's schema forbids"
    assert any(error.startswith(f"{where}:") for error in errors), errors


def test_committed_schemas_are_the_hubs() -> None:
    """tests/hub_schemas/ holds the Hub's files unchanged (when the Hub's copy is at hand)."""
    if not (SHARED_HUB / "schemas").is_dir():
        pytest.skip(
            f"{SHARED_HUB / 'schemas'} is not on this machine (a fresh clone has no ../shared): "
            "nothing to compare the committed copy with"
        )
    ours = {path.relative_to(SCHEMAS) for path in SCHEMAS.glob("*/*.schema.json")}
    theirs = {
        path.relative_to(SHARED_HUB / "schemas") for path in SHARED_HUB.glob("schemas/*/*.json")
    }
    assert ours == theirs
    pairs = [(SCHEMAS / name, SHARED_HUB / "schemas" / name) for name in sorted(ours)]
    pairs += [(SCHEMAS / "LICENSE", SHARED_HUB / "LICENSE")]
    if (SHARED_HUB / "examples" / HUB_EXAMPLE.name).exists():
        pairs.append((HUB_EXAMPLE, SHARED_HUB / "examples" / HUB_EXAMPLE.name))
    differ = [str(mine.relative_to(ROOT)) for mine, hub in pairs if not filecmp.cmp(mine, hub)]
    assert differ == [], f"differ from {SHARED_HUB}: copy the Hub's versions over them"


# The definition against the tap


def tap_env() -> dict[str, str]:
    """This environment minus anything that would configure the tap."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TAP_WHOOP_", "MELTANO_"))
    }


@pytest.fixture(scope="module")
def about() -> dict[str, t.Any]:
    result = subprocess.run(
        [str(BIN / "tap-whoop"), "--about", "--format", "json"],
        capture_output=True,
        text=True,
        env=tap_env(),
        timeout=120,
        check=True,
    )
    return t.cast(dict[str, t.Any], json.loads(result.stdout))


@pytest.fixture(scope="module")
def default_selection(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bool]:
    """stream -> whether `tap-whoop --discover` selects it by default."""
    config = tmp_path_factory.mktemp("discover") / "config.json"
    config.write_text(json.dumps({"client_id": "hub-test", "client_secret": "hub-test"}))
    result = subprocess.run(
        [str(BIN / "tap-whoop"), "--config", str(config), "--discover"],
        capture_output=True,
        text=True,
        env=tap_env(),
        timeout=120,
        check=True,
    )
    selected = {}
    for stream in json.loads(result.stdout)["streams"]:
        (top,) = [entry["metadata"] for entry in stream["metadata"] if entry["breadcrumb"] == []]
        selected[stream["tap_stream_id"]] = bool(top.get("selected-by-default"))
    return selected


@pytest.fixture(scope="module")
def definition() -> dict[str, t.Any]:
    return load_yaml(DEFINITION)


def expected_setting(name: str, prop: dict[str, t.Any]) -> dict[str, t.Any]:
    """The Hub setting that says what the tap's schema says of setting `name`.

    Kinds: a secret string is `password`; otherwise the JSON type's kind (text for numbers, see
    `KINDS`; a date-time is text too, as the user typed it: Meltano's `date_iso8601` rewrites
    what it cannot read, e.g. 2024-13-01 as 2024-01-13). Secrets of any type are `sensitive`. The
    default, when the tap has one, is the setting's `value`.
    """
    types = prop.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    real = [kind for kind in types if kind != "null"]
    assert len(real) == 1, f"{name}: the tap's schema gives no single type ({types}); map it here"
    kind = KINDS[real[0]]
    if kind == "string" and prop.get("secret"):
        kind = "password"
    setting: dict[str, t.Any] = {
        "name": name,
        "label": prop.get("title"),
        "kind": kind,
        "description": prop.get("description"),
    }
    if "default" in prop:
        setting["value"] = prop["default"]
    if prop.get("secret"):
        setting["sensitive"] = True
    return setting


def test_settings_are_the_taps(definition: dict[str, t.Any], about: dict[str, t.Any]) -> None:
    """Every setting of `--about`, nothing else, in the same order, each saying the same."""
    properties = about["settings"]["properties"]
    names = [setting["name"] for setting in definition["settings"]]
    assert len(names) == len(set(names)), "a setting is defined twice"
    missing = [name for name in properties if name not in names]
    extra = [name for name in names if name not in properties]
    assert (missing, extra) == ([], []), "settings missing from / extra in hub/tap-whoop.yml"
    assert names == list(properties), "keep the settings in --about's order"
    for setting in definition["settings"]:
        assert setting == expected_setting(setting["name"], properties[setting["name"]])


def test_secrets_are_sensitive_passwords(
    definition: dict[str, t.Any], about: dict[str, t.Any]
) -> None:
    """Stated on its own, since it is the one that matters: what the tap hides, Meltano hides."""
    properties = about["settings"]["properties"]
    secret = {name for name, prop in properties.items() if prop.get("secret")}
    sensitive = {s["name"] for s in definition["settings"] if s.get("sensitive")}
    assert sensitive == secret
    assert {"client_secret", "refresh_token", "users"} <= sensitive
    for setting in definition["settings"]:
        if setting["name"] in secret and "string" in properties[setting["name"]]["type"]:
            assert setting["kind"] == "password", setting["name"]


def test_capabilities_and_pythons_are_the_taps(
    definition: dict[str, t.Any], about: dict[str, t.Any]
) -> None:
    assert sorted(definition["capabilities"]) == sorted(about["capabilities"])
    assert len(set(definition["capabilities"])) == len(definition["capabilities"])
    assert definition["supported_python_versions"] == about["supported_python_versions"]


def test_group_validation_is_the_required_settings(
    definition: dict[str, t.Any], about: dict[str, t.Any]
) -> None:
    assert definition["settings_group_validation"] == [about["settings"]["required"]]


def test_select_keeps_the_drill_downs_off(
    definition: dict[str, t.Any], default_selection: dict[str, bool]
) -> None:
    """Each stream the tap selects by default, whole; each drill-down excluded by name."""
    assert {name for name, on in default_selection.items() if not on} == DRILL_DOWNS
    expected = [f"{name}.*" for name, on in default_selection.items() if on]
    expected += [f"!{name}.*" for name, on in default_selection.items() if not on]
    assert sorted(definition["select"]) == sorted(expected)


def test_links_are_the_packages_page(definition: dict[str, t.Any]) -> None:
    """No placeholder: repo and docs are the PyPI page the tap's User-Agent names."""
    (page,) = re.findall(r"\(\+(https://[^)]+)\)", USER_AGENT)
    assert definition["repo"] == definition["docs"] == page == "https://pypi.org/project/tap-whoop/"
    assert "example.invalid" not in DEFINITION.read_text(encoding="utf-8")


def test_identity(definition: dict[str, t.Any], about: dict[str, t.Any]) -> None:
    assert definition["name"] == about["name"] == "tap-whoop"
    assert definition["namespace"] == "tap_whoop"
    assert definition["pip_url"] == "tap-whoop"
    assert definition["executable"] == "tap-whoop"
    assert {"meltano_sdk", "api"} <= set(definition["keywords"])
    # The namespace is what the project's own meltano.yml uses, so state and config carry over.
    project = load_yaml(ROOT / "meltano.yml")
    (ours,) = [p for p in project["plugins"]["extractors"] if p["name"] == "tap-whoop"]
    assert ours["namespace"] == definition["namespace"]
