"""End to end: a loader that fails after the tap drained its events, and a second pipeline.

In one Meltano project, `tap-whoop target-postgres` and `tap-whoop target-duckdb` are two
pipelines with two state ids, sharing one token store and one webhook inbox. A workout is edited
and another deleted in the sandbox, and WHOOP's events reach the inbox. Then the PostgreSQL
pipeline runs with a loader that reads every message and fails (`meltano el` under that
pipeline's state id): Meltano keeps the last committed state. The next good run of each pipeline
must still load the edit and mark the deletion.
"""

from __future__ import annotations

import typing as t

import pytest

from tap_whoop.stores.inbox import Event
from tap_whoop.stores.sql_inbox import SqliteInbox
from tests import test_deletions_e2e, test_pipelines
from tests.test_deletions_e2e import MEMBER, key_text
from tests.test_pipelines import ROOT, MeltanoProject, Postgres, log_tail, reader_for

if t.TYPE_CHECKING:
    from whoop_sandbox import Sandbox

pytestmark = pytest.mark.e2e

meltano_installed = test_pipelines.meltano_installed
postgres = test_pipelines.postgres
pg_schema = test_pipelines.pg_schema
whoop = test_deletions_e2e.whoop
project = test_deletions_e2e.project

FAILING_LOADER = f"""
  - name: target-that-fails
    namespace: target_that_fails
    executable: {ROOT / "tests" / "targets" / "target-that-fails"}
"""


def test_a_failed_load_and_a_second_pipeline_each_get_every_webhook_change(
    whoop: Sandbox, project: MeltanoProject, postgres: Postgres, pg_schema: str
) -> None:
    meltano_yml = project.root / "meltano.yml"
    text = meltano_yml.read_text(encoding="utf-8")
    meltano_yml.write_text(text.replace("\n  loaders:\n", f"\n  loaders:{FAILING_LOADER}", 1))
    readers = {
        loader: reader_for(loader, project, postgres, pg_schema)[0]
        for loader in ("target-postgres", "target-duckdb")
    }
    for loader in readers:
        project.run(loader)
    committed = project.state("target-postgres")
    edited, gone = whoop.records(MEMBER, "workout")[:2]
    whoop.clear_webhook_log()
    whoop.edit_record(MEMBER, "workout", edited["id"], {"sport_name": "rowing"})
    whoop.delete_record(MEMBER, "workout", gone["id"])
    inbox = SqliteInbox(project.token_store.parent / "inbox.sqlite")
    for change in whoop.webhook_log():
        inbox.add(Event(change["user_id"], change["type"], change["id"], change["trace_id"]))

    failed = project.meltano(
        "el", "tap-whoop", "target-that-fails", "--state-id", "sandbox:tap-whoop-to-target-postgres"
    )
    output = log_tail(failed, 400)
    assert failed.returncode != 0, output
    assert "read every message, committed nothing" in output
    assert "2 event(s) of 1 member(s) passed on" in output, output
    assert project.state("target-postgres") == committed

    for loader, read in readers.items():
        project.run(loader)
        rows = {key_text(row["id"]): row for row in read("workout")}
        assert rows[edited["id"]]["sport_name"] == "rowing", loader
        assert rows[edited["id"]]["_sdc_deleted_at"] is None, loader
        assert rows[gone["id"]]["_sdc_deleted_at"] is not None, loader
