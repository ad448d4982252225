"""Requests per deleted record: what the second look at a record's endpoint costs.

Why: a record is marked deleted only on WHOOP's signed `*.deleted` event (no request at all), or
when a window no longer lists it and its own endpoint answers WHOOP's JSON 404 twice, a few
seconds apart (round 3; before, one 404 sufficed). Deletions WHOOP did not announce are rare (a
lost webhook, a run without the receiver), so the second look costs one request per such
deletion and nothing per member-day otherwise.

One member, 30 days of history, a first sync; then `--deleted` sleeps and workouts of the last
days are deleted in the sandbox. Two ways, each from the same first state:

- reconciliation: no events, the incremental run finds the deletions in its window;
- webhooks: the sandbox's `*.deleted` events in the inbox, the member resting.

Counted: the sandbox's by-id requests (`/v2/activity/{sleep,workout}/{id}`, `/v2/cycle/{id}/
recovery`) and all API requests of that run, per deleted record.

    python benchmarks/deletions.py [--deleted 6]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import _common as c

from tap_whoop.stores.inbox import Event
from tap_whoop.stores.sql_inbox import SqliteInbox

HISTORY_DAYS = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deleted", type=int, default=6, help="records deleted (default 6)")
    args = parser.parse_args()
    rows, result = [], {}
    for way in ("reconciliation", "webhooks"):
        with c.sandbox(HISTORY_DAYS) as box, tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            config = c.write_config(box, folder)
            first = folder / "first.jsonl"
            c.run_child(c.tap(config), stdout=first)
            state = folder / "state.json"
            state.write_text(json.dumps(c.last_state(first)))
            box.clear_webhook_log()
            deleted = 0
            for kind in ("workout", "sleep"):
                for record in box.records(c.MEMBER, kind)[1 : 1 + args.deleted // 2]:
                    box.delete_record(c.MEMBER, kind, record["id"])
                    deleted += 1 + (kind == "sleep" and not record["nap"])
            if way == "webhooks":
                inbox = SqliteInbox(folder / "inbox.sqlite")
                for change in box.webhook_log():
                    inbox.add(
                        Event(change["user_id"], change["type"], change["id"], change["trace_id"])
                    )
                inbox.close()
            box.reset_stats()
            out = folder / "second.jsonl"
            c.run_child(c.tap(config, state), stdout=out)
            marked = sum(
                1
                for line in out.open()
                if line.startswith('{"type":"RECORD"') and '"_sdc_deleted_at":"' in line
            )
            paths = box.stats()["by_path"]
            by_id = sum(n for path, n in paths.items() if _by_id(path))
            requests = sum(paths.values())
            rows.append([way, deleted, marked, by_id, by_id / max(marked, 1), requests])
            result[way] = {
                "deleted": deleted,
                "marked": marked,
                "by_id_requests": by_id,
                "by_id_per_deleted": round(by_id / max(marked, 1), 2),
                "requests": requests,
            }
            shutil.rmtree(folder, ignore_errors=True)
    print(
        c.table(
            ["found by", "deleted", "marked", "by-id requests", "per deleted", "all requests"], rows
        )
    )
    print(f"saved {c.save('deletions', result)}")


def _by_id(path: str) -> bool:
    parts = path.strip("/").split("/")
    return (parts[1:3] in (["activity", "sleep"], ["activity", "workout"]) and len(parts) == 4) or (
        parts[1] == "cycle" and len(parts) == 4
    )


if __name__ == "__main__":
    main()
