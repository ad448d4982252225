"""Write a digest of WHOOP's OpenAPI spec: the fields of the components tap-whoop's streams emit.

    python scripts/spec_digest.py [SPEC] > tests/whoop_spec_digest.json
    python scripts/spec_digest.py [SPEC] --output tests/whoop_spec_digest.json
    python scripts/spec_digest.py [SPEC] --check   # exit 1 with a diff when the digest is stale
    python scripts/spec_digest.py [SPEC] --component Sleep --component SleepScore   # others
    python scripts/spec_digest.py --sleep-stream [--check]   # the 2026-08 spec's sleep stream

SPEC is a path or an http(s) URL, JSON or YAML (WHOOP publishes the spec at
https://api.prod.whoop.com/developer/doc/openapi.json); without SPEC, the script reads
$TAP_WHOOP_OPENAPI_SPEC, else ../shared/whoop-openapi.json beside the repository.

`--sleep-stream` digests the sleep signal stream (`SleepStreamResponse`), which only WHOOP's
2026-08 spec has, into its own file: SPEC defaults to $TAP_WHOOP_OPENAPI_SPEC_2026_08, else
../shared/whoop-openapi-2026-08.yml, and the digest is tests/whoop_spec_digest_2026_08.json.

For each component in COMPONENTS the digest lists every field, nested objects flattened with
dots (`score.strain`) and array items as `name[]`, with its OpenAPI type, format, enum, whether
the component requires it and whether the spec marks it nullable. `$ref`s are followed, `allOf`
parts merged, and `oneOf`/`anyOf` alternatives united (a field is required only when every
alternative requires it). The output is deterministic (sorted keys, indent 2, one line per
field), so tests/test_schemas.py checks the stream schemas against it without the spec, and
the committed digest against a fresh one whenever the spec is present.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DIGEST_PATH = REPO / "tests" / "whoop_spec_digest.json"
DEFAULT_SPEC_PATH = REPO.parent / "shared" / "whoop-openapi.json"
SPEC_ENV = "TAP_WHOOP_OPENAPI_SPEC"
PUBLISHED_SPEC_URL = "https://api.prod.whoop.com/developer/doc/openapi.json"
COMMAND = "python scripts/spec_digest.py --output tests/whoop_spec_digest.json"

#: The sleep signal stream, in WHOOP's 2026-08 spec only: digested into a file of its own.
SIGNALS_DIGEST_PATH = REPO / "tests" / "whoop_spec_digest_2026_08.json"
SIGNALS_SPEC_PATH = REPO.parent / "shared" / "whoop-openapi-2026-08.yml"
SIGNALS_SPEC_ENV = "TAP_WHOOP_OPENAPI_SPEC_2026_08"
SIGNALS_COMPONENTS = ("SleepStreamResponse",)
SIGNALS_COMMAND = "python scripts/spec_digest.py --sleep-stream --output " + str(
    SIGNALS_DIGEST_PATH.relative_to(REPO)
)

#: The spec components whose records tap-whoop's streams emit.
COMPONENTS = ("Cycle", "Recovery", "Sleep", "UserBasicProfile", "UserBodyMeasurement", "WorkoutV2")

#: The keys of a field the digest keeps (besides required, nullable and items).
KEPT = ("type", "format", "enum")

#: Deeper nesting than this means a schema that contains itself.
MAX_DEPTH = 16

#: The depth of a field in the digest (components > component > field): one line each.
FIELD_DEPTH = 3

Schema = dict[str, Any]


def default_spec() -> str:
    """$TAP_WHOOP_OPENAPI_SPEC, else ../shared/whoop-openapi.json beside the repository."""
    return os.environ.get(SPEC_ENV) or str(DEFAULT_SPEC_PATH)


def signals_spec() -> str:
    """$TAP_WHOOP_OPENAPI_SPEC_2026_08, else ../shared/whoop-openapi-2026-08.yml."""
    return os.environ.get(SIGNALS_SPEC_ENV) or str(SIGNALS_SPEC_PATH)


def load_spec(source: str) -> Schema:
    """The spec at a path or an http(s) URL, in JSON or (named .yml or .yaml) YAML."""
    if source.startswith(("https://", "http://")):
        with urllib.request.urlopen(source, timeout=60) as response:  # noqa: S310 (http(s) only)
            text = response.read().decode("utf-8")
    else:
        text = Path(source).read_text(encoding="utf-8")
    if source.lower().split("?")[0].endswith((".yml", ".yaml")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"not YAML: {error}") from None
    return json.loads(text)


class Resolver:
    """Flattens a spec's schemas: `$ref` followed, `allOf` merged, `oneOf`/`anyOf` united."""

    def __init__(self, spec: Schema) -> None:
        self.spec = spec

    def component(self, ref: str) -> Schema:
        """The schema a local `$ref` (`#/components/schemas/Name`) points at."""
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, not {ref!r}")
        node: Any = self.spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def flatten(self, schema: Schema, seen: tuple[str, ...] = ()) -> Schema:
        """`schema` with its `$ref`, `allOf`, `oneOf` and `anyOf` folded in.

        `seen` holds the `$ref`s being expanded, so a cycle stops instead of recursing forever.
        """
        schema = dict(schema)
        parts: list[Schema] = []
        ref = schema.pop("$ref", None)
        if ref is not None and ref not in seen:
            parts.append(self.flatten(self.component(ref), (*seen, ref)))
        parts += [self.flatten(part, seen) for part in schema.pop("allOf", [])]
        for key in ("oneOf", "anyOf"):
            if key in schema:
                parts.append(self._union([self.flatten(p, seen) for p in schema.pop(key)]))
        merged: Schema = {}
        for part in [*parts, schema]:
            merged = _merge(merged, part)
        return merged

    @staticmethod
    def _union(alternatives: list[Schema]) -> Schema:
        """Every alternative's properties; required only what all of them require."""
        union: Schema = {}
        for alternative in alternatives:
            union = _merge(union, {k: v for k, v in alternative.items() if k != "required"})
        required = [set(a.get("required", [])) for a in alternatives]
        union["required"] = sorted(set.intersection(*required)) if required else []
        return union


def _merge(base: Schema, extra: Schema) -> Schema:
    """`extra` laid over `base`, uniting their `properties` and `required`."""
    merged = {**base, **extra}
    if "properties" in base or "properties" in extra:
        merged["properties"] = {**base.get("properties", {}), **extra.get("properties", {})}
    if "required" in base or "required" in extra:
        merged["required"] = sorted({*base.get("required", []), *extra.get("required", [])})
    return merged


def _type(schema: Schema) -> str:
    if "type" in schema:
        return schema["type"]
    return "array" if "items" in schema else "object"


def fields(
    resolver: Resolver, schema: Schema, prefix: str = "", depth: int = 0
) -> dict[str, Schema]:
    """Every field of an object schema, by dotted path, nested objects included."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{prefix.rstrip('.')} nests more than {MAX_DEPTH} levels: recursive?")
    schema = resolver.flatten(schema)
    required = set(schema.get("required", []))
    out: dict[str, Schema] = {}
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        prop = resolver.flatten(prop)
        out[path] = _field(prop, required=name in required)
        kind = _type(prop)
        if kind == "object":
            out.update(fields(resolver, prop, f"{path}.", depth + 1))
        elif kind == "array":
            items = resolver.flatten(prop.get("items", {}))
            if _type(items) == "object":
                out.update(fields(resolver, items, f"{path}[].", depth + 1))
    return out


def _field(prop: Schema, *, required: bool) -> Schema:
    entry: Schema = {k: prop[k] for k in KEPT if k in prop}
    entry["type"] = _type(prop)
    entry["required"] = required
    entry["nullable"] = bool(prop.get("nullable", False))
    if entry["type"] == "array":
        items = prop.get("items", {})
        entry["items"] = {k: items[k] for k in KEPT if k in items} | {"type": _type(items)}
    return entry


def build_digest(
    spec: Schema, components: tuple[str, ...] = COMPONENTS, command: str = COMMAND
) -> Schema:
    """The digest of `components` in `spec`, as the JSON object the script writes."""
    resolver = Resolver(spec)
    schemas = spec["components"]["schemas"]
    missing = [name for name in components if name not in schemas]
    if missing:
        raise ValueError(f"the spec has no component {', '.join(missing)}")
    info = spec.get("info", {})
    return {
        "about": {
            "description": "Fields of WHOOP's official OpenAPI spec that tap-whoop's streams emit",
            "generated_by": command,
            "spec": {
                "openapi": spec.get("openapi"),
                "title": info.get("title"),
                "version": info.get("version"),
                "published_at": PUBLISHED_SPEC_URL,
            },
        },
        "components": {name: fields(resolver, schemas[name]) for name in components},
    }


def render(digest: Schema) -> str:
    """The digest as the committed file holds it: sorted keys, indent 2, one line per field."""
    return _dump(digest, depth=0) + "\n"


def _dump(value: Any, depth: int) -> str:
    """JSON with objects above field level spread over lines, fields each on one line."""
    if not isinstance(value, dict) or not value or depth >= FIELD_DEPTH:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    pad = "  " * (depth + 1)
    items = [
        f"{pad}{json.dumps(key, ensure_ascii=False)}: {_dump(value[key], depth + 1)}"
        for key in sorted(value)
    ]
    return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"


def diff(committed: str, fresh: str) -> str:
    """A unified diff from the committed digest to the one the spec gives."""
    lines = difflib.unified_diff(
        committed.splitlines(keepends=True),
        fresh.splitlines(keepends=True),
        fromfile="tests/whoop_spec_digest.json (committed)",
        tofile="tests/whoop_spec_digest.json (from the spec)",
    )
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print or write the digest; with --check, 1 and a diff when the committed one differs."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "spec",
        nargs="?",
        default=None,
        help=f"path or http(s) URL of the spec (default: ${SPEC_ENV}, else {DEFAULT_SPEC_PATH}; "
        f"WHOOP publishes it at {PUBLISHED_SPEC_URL})",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write the digest here, not to stdout (with --check: the digest to compare)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"compare with --output (default: {DIGEST_PATH.relative_to(REPO)}) instead of "
        "writing; exit 1 and print a diff when it differs",
    )
    parser.add_argument(
        "--sleep-stream",
        action="store_true",
        help=f"digest {', '.join(SIGNALS_COMPONENTS)} (default SPEC: ${SIGNALS_SPEC_ENV}, else "
        f"{SIGNALS_SPEC_PATH}) into {SIGNALS_DIGEST_PATH.relative_to(REPO)}",
    )
    parser.add_argument(
        "--component",
        action="append",
        metavar="NAME",
        help="digest this component instead of the streams' (repeatable)",
    )
    args = parser.parse_args(argv)
    source = args.spec or (signals_spec() if args.sleep_stream else default_spec())
    components = SIGNALS_COMPONENTS if args.sleep_stream else COMPONENTS
    components = tuple(args.component) if args.component else components
    command = SIGNALS_COMMAND if args.sleep_stream else COMMAND
    try:
        fresh = render(build_digest(load_spec(source), components, command))
    except (OSError, ValueError, KeyError) as error:  # KeyError: no components
        print(f"spec_digest: cannot digest {source}: {error}", file=sys.stderr)
        return 2
    if args.check:
        target = args.output or (SIGNALS_DIGEST_PATH if args.sleep_stream else DIGEST_PATH)
        committed = target.read_text(encoding="utf-8") if target.is_file() else ""
        if committed == fresh:
            print(f"{target} matches {source}")
            return 0
        sys.stdout.write(diff(committed, fresh))
        print(f"\n{target} differs from {source}; regenerate it: {command}", file=sys.stderr)
        return 1
    if args.output is not None:
        args.output.write_text(fresh, encoding="utf-8")
    else:
        sys.stdout.write(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
