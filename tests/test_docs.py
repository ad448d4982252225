"""The docs say what the tap does: README.md and meltano.yml against `--about` and discovery.

Each test fails on drift and names what differs; fix the docs (or the tap) so they agree again.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import typing as t
from pathlib import Path

import yaml

from tap_whoop.settings import SETTING_NAMES
from tap_whoop.tap import TapWhoop

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TAP_WHOOP = Path(sys.executable).parent / "tap-whoop"
#: The tap's own settings; `--about` adds the SDK's (stream maps, flattening, batch).
OWN_SETTINGS = set(SETTING_NAMES)


def about(output_format: str) -> str:
    result = subprocess.run(
        [str(TAP_WHOOP), "--about", f"--format={output_format}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def section(markdown: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    lines = markdown.splitlines()
    start = lines.index(heading)
    end = next(
        (
            n
            for n in range(start + 1, len(lines))
            if re.match(r"#+ ", lines[n]) and len(lines[n].split(" ")[0]) <= len(level)
        ),
        len(lines),
    )
    return "\n".join(lines[start + 1 : end])


def table(text: str) -> list[list[str]]:
    """The rows of the first markdown table in `text` (header and separator left out)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
        elif rows:
            break
    assert len(rows) >= 2, f"no table in:\n{text[:300]}"
    return rows[2:]


def settings_rows(markdown: str) -> dict[str, tuple[str, ...]]:
    """Setting name -> (required, default, description)."""
    rows = {}
    for row in table(section(markdown, "## Settings")):
        assert len(row) == 4, row
        rows[row[0]] = tuple(row[1:])
    return rows


def test_readme_settings_table_is_the_taps() -> None:
    documented = settings_rows(README)
    actual = settings_rows(about("markdown"))
    own = {name: row for name, row in actual.items() if name in OWN_SETTINGS}
    assert set(own) == OWN_SETTINGS
    differ = {
        name: {"README": documented.get(name), "--about": own.get(name)}
        for name in documented.keys() | own.keys()
        if documented.get(name) != own.get(name)
    }
    assert not differ, (
        "README.md's settings table differs from `tap-whoop --about --format=markdown`: "
        + json.dumps(differ, indent=1)
    )
    assert list(documented) == list(own), "README.md lists the settings in another order"
    text = section(README, "## Settings")
    sdk = {name.split(".")[0] for name in actual if name not in OWN_SETTINGS}
    missing = sorted(name for name in sdk if f"`{name}`" not in text)
    assert not missing, f"README.md's settings section does not mention the SDK's {missing}"


def meltano_yml() -> dict[str, t.Any]:
    return t.cast(dict[str, t.Any], yaml.safe_load((ROOT / "meltano.yml").read_text()))


def tap_plugin() -> dict[str, t.Any]:
    (plugin,) = [p for p in meltano_yml()["plugins"]["extractors"] if p["name"] == "tap-whoop"]
    return t.cast(dict[str, t.Any], plugin)


def meltano_kind(schema: dict[str, t.Any]) -> str:
    kind = next(k for k in schema["type"] if k != "null")
    # A date-time is text (not `date_iso8601`): Meltano would rewrite what it cannot read,
    # e.g. 2024-13-01 as 2024-01-13, where the tap's own check refuses it in one line.
    if kind == "number":
        return "string"  # see NUMBERS_AS_TEXT in test_hub.py
    return t.cast(str, kind)


def test_meltano_yml_settings_are_the_taps() -> None:
    properties = json.loads(about("json"))["settings"]["properties"]
    declared = {setting["name"]: setting for setting in tap_plugin()["settings"]}
    assert set(declared) == OWN_SETTINGS, (
        f"meltano.yml lacks {sorted(OWN_SETTINGS - set(declared))}, "
        f"has unknown {sorted(set(declared) - OWN_SETTINGS)}"
    )
    problems = []
    for name, setting in declared.items():
        schema = properties[name]
        if setting.get("description") != schema.get("description"):
            problems.append(f"{name}: description {setting.get('description')!r}")
        if setting.get("label") != schema.get("title"):
            problems.append(
                f"{name}: label {setting.get('label')!r} (tap: {schema.get('title')!r})"
            )
        if bool(setting.get("sensitive")) != bool(schema.get("secret")):
            problems.append(f"{name}: sensitive {setting.get('sensitive')!r}")
        if setting.get("kind") != meltano_kind(schema):
            problems.append(f"{name}: kind {setting.get('kind')!r}, tap: {meltano_kind(schema)!r}")
    assert not problems, "meltano.yml's tap-whoop settings differ from `--about`: " + "; ".join(
        problems
    )


def test_meltano_yml_requires_only_what_the_tap_requires() -> None:
    """A member's refresh token may live only in the token store (after `tap-whoop auth`)."""
    required = set(json.loads(about("json"))["settings"]["required"])
    for group in tap_plugin()["settings_group_validation"]:
        assert set(group) == required, f"settings_group_validation {group}: tap requires {required}"


def test_meltano_yml_capabilities_are_the_taps() -> None:
    capabilities = set(json.loads(about("json"))["capabilities"])
    declared = set(tap_plugin()["capabilities"])
    assert declared <= capabilities, f"meltano.yml claims {sorted(declared - capabilities)}"
    assert {"catalog", "discover", "state"} <= declared


def test_readme_streams_table_is_the_catalog() -> None:
    config = {"client_id": "x", "client_secret": "y", "refresh_token": "z"}
    catalog = TapWhoop(config=config, validate_config=False).catalog_dict
    actual = {}
    for entry in catalog["streams"]:
        (root,) = [m["metadata"] for m in entry["metadata"] if m["breadcrumb"] == []]
        incremental = entry.get("replication_method") == "INCREMENTAL"
        actual[entry["tap_stream_id"]] = (
            list(entry["key_properties"]),
            entry.get("replication_key") if incremental else None,
            bool(root.get("selected-by-default")),
        )
    documented = {}
    for stream, key, replication, selected in table(section(README, "## Streams")):
        found = re.fullmatch(r"incremental on `(\w+)`", replication)
        documented[stream.strip("`")] = (
            [key.strip("`")],
            found.group(1) if found else None,
            {"yes": True, "no": False}[selected],
        )
    assert documented == actual


def readme_capabilities() -> list[str]:
    """The capabilities README.md's Capabilities section lists, one `- `name`: …` item each."""
    return re.findall(r"^- `([a-z-]+)`:", section(README, "## Capabilities"), re.MULTILINE)


def test_readme_capabilities_are_the_taps_and_the_hubs() -> None:
    """README.md lists what `--about` advertises, nothing else; so does hub/tap-whoop.yml."""
    advertised = json.loads(about("json"))["capabilities"]
    listed = readme_capabilities()
    assert len(listed) == len(set(listed)), f"README.md lists a capability twice: {listed}"
    assert sorted(listed) == sorted(advertised), (
        f"README.md's Capabilities list {sorted(listed)} is not `--about`'s {sorted(advertised)}"
    )
    hub = yaml.safe_load((ROOT / "hub" / "tap-whoop.yml").read_text(encoding="utf-8"))
    assert sorted(hub["capabilities"]) == sorted(advertised)


def test_no_capability_the_tap_does_not_have() -> None:
    """ACTIVATE_VERSION is never sent, and the SDK's batch files would bypass the tap's filter."""
    advertised = set(json.loads(about("json"))["capabilities"])
    assert not advertised & {"activate-version", "batch"}
    assert {"catalog", "discover", "state", "about", "stream-maps", "schema-flattening"} <= (
        advertised
    )


def test_readme_default_selection_is_meltano_ymls() -> None:
    """The streams meltano.yml selects are those selected by default."""
    selected = {pattern.split(".")[0] for pattern in tap_plugin()["select"]}
    documented = {
        row[0].strip("`") for row in table(section(README, "## Streams")) if row[3] == "yes"
    }
    assert selected == documented


#: The project's own docs: links between them must resolve in a clone.
DOCS = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "CHANGELOG.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of `markdown` (code blocks left out)."""
    found: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (heading := re.match(r"#+ (.*)", line)):
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(text.replace(" ", "-"))
    return found


def test_links_between_the_docs_resolve() -> None:
    """Every relative link names a file of the repository, and a heading of it if it has `#`."""
    broken = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            if not linked.exists() or not linked.is_relative_to(ROOT):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and anchor not in anchors(linked.read_text(encoding="utf-8")):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_no_placeholder_urls_in_the_docs() -> None:
    for doc in [*DOCS, ROOT / "hub" / "tap-whoop.yml", ROOT / "pyproject.toml"]:
        text = doc.read_text(encoding="utf-8")
        hosts = re.findall(r"https?://([\w.-]+)", text)
        # .invalid is reserved never to resolve (RFC 2606): a placeholder left in, not a link.
        placeholders = [host for host in hosts if host.rstrip(".").endswith(".invalid")]
        assert placeholders == [], f"{doc.relative_to(ROOT)}: {placeholders}"
