"""End to end: the docs' concurrent recipes run as printed, in one Meltano project folder.

The shell blocks of docs/operations.md's "Several workers" section (one shard alone the first
time, then `sync-shards.sh`; then `both-pipelines.sh`, two pipelines of the tap at once) are
taken from that file itself and run with bash in a Meltano project on the sandbox's four members,
twice each; every record is loaded once into each loader.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import typing as t
from pathlib import Path

import pytest

from tap_whoop.settings import shard_of
from tests import test_deletions_e2e, test_pipelines
from tests.doc_blocks import sh_block
from tests.test_pipelines import (
    COLLECTIONS,
    MELTANO,
    PLUGINS,
    PRIMARY_KEYS,
    ROOT,
    Postgres,
    clean_env,
    duckdb_rows,
    pg_rows,
)
from whoop_sandbox import Sandbox, SandboxServer

if t.TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.e2e

meltano_installed = test_pipelines.meltano_installed
postgres = test_pipelines.postgres
pg_schema = test_pipelines.pg_schema
MEMBERS = ("alice", "bob", "carol", "dave")


#: Where the recipes are printed (they moved there from README.md).
RECIPES = ROOT / "docs" / "operations.md"


def recipe_block(first_line: str) -> str:
    """docs/operations.md's ```sh block whose first line is `first_line` (there must be one)."""
    return sh_block(RECIPES, first_line)


@pytest.fixture
def whoop() -> Iterator[Sandbox]:
    sandbox = Sandbox(
        members=MEMBERS,
        history_days=10,
        now=test_deletions_e2e.NOW,
        per_minute=None,
        per_day=None,
    )
    with test_pipelines.served(sandbox):
        yield sandbox


def test_the_shard_recipe_of_docs_operations_runs_as_printed_in_one_project_folder(
    tmp_path: Path, meltano_installed: None, whoop: Sandbox, postgres: Postgres, pg_schema: str
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "meltano.yml", root / "meltano.yml")
    for plugin in PLUGINS:
        (root / ".meltano" / plugin).mkdir(parents=True)
        (root / ".meltano" / plugin / "venv").symlink_to(ROOT / ".meltano" / plugin / "venv")
    server: SandboxServer = whoop.server  # type: ignore[attr-defined]
    users = ",".join(
        f'{{"key": "{key}", "refresh_token": "{whoop.seed_refresh_token(key)}"}}' for key in MEMBERS
    )
    env = clean_env() | {
        "PATH": f"{MELTANO.parent}{os.pathsep}{os.environ['PATH']}",
        "MELTANO_PROJECT_ROOT": str(root),
        "MELTANO_AUTO_INSTALL": "false",
        "MELTANO_CLI_DISABLE_VERSION_CHECK": "1",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "TAP_WHOOP_API_URL": server.api_url,
        "TAP_WHOOP_OAUTH_URL": server.oauth_url,
        "TAP_WHOOP_CLIENT_ID": "sandbox-client",
        "TAP_WHOOP_CLIENT_SECRET": "sandbox-secret",
        "TAP_WHOOP_USERS": f"[{users}]",
        **postgres.target_env(pg_schema),
    }
    (root / "first-time.sh").write_text(recipe_block("# first time only: one shard alone"))
    (root / "sync-shards.sh").write_text(recipe_block("# sync-shards.sh"))

    def bash(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", script],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    first = bash("first-time.sh")
    assert first.returncode == 0, problems(first)
    assert not any(shard_of(key, 4) == 0 for key in MEMBERS), "shard 0 should have no member"
    assert set(PRIMARY_KEYS) <= pg_tables(postgres, pg_schema), "the lone shard made every table"
    for _ in range(2):  # a first full sync of the other shards, then an incremental round
        result = bash("sync-shards.sh")
        assert result.returncode == 0, problems(result)
        assert "Cannot start plugin" not in result.stderr

    assert_every_record_once(lambda table: pg_rows(postgres, pg_schema, table), whoop)

    (root / "output").mkdir()
    (root / "both-pipelines.sh").write_text(recipe_block("# both-pipelines.sh"))
    for _ in range(2):
        result = bash("both-pipelines.sh")
        assert result.returncode == 0, problems(result)
        assert "Cannot start plugin" not in result.stderr
    assert_every_record_once(lambda table: pg_rows(postgres, pg_schema, table), whoop)
    duckdb_file = root / "output" / "whoop.duckdb"
    assert_every_record_once(lambda table: duckdb_rows(duckdb_file, table), whoop)


def problems(result: subprocess.CompletedProcess[str]) -> str:
    """What a failed recipe said: its error and warning lines, then the end of its output."""
    lines = [
        line
        for line in result.stderr.splitlines()
        if re.search(r"error|warning|exception|failed", line, re.IGNORECASE)
    ]
    return "\n".join(lines[-40:]) + "\n…\n" + result.stderr[-1500:]


def pg_tables(postgres: Postgres, schema: str) -> set[str]:
    with postgres.connect() as connection:
        rows = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {row[0] for row in rows}


def assert_every_record_once(
    read: t.Callable[[str], list[dict[str, t.Any]]], whoop: Sandbox
) -> None:
    for table, (kind, key) in COLLECTIONS.items():
        keys = [str(row[key]) for row in read(table)]
        assert len(keys) == len(set(keys)), f"{table}: a record loaded twice"
        expected = {str(r[key]) for member in MEMBERS for r in whoop.records(member, kind)}  # type: ignore[arg-type]
        assert set(keys) == expected, table
