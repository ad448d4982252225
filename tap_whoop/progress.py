"""What one run has done and decided so far, pass by pass: the tap's, handed to every stream.

`Run` builds and holds the services (settings, stores, members, pacer, budget); a run's progress
(which pass is under way, who rests, who was deferred, what history is left, the deletions
emitted) lives here, in an object the tap creates and passes to its streams and to the drain.
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass, field

from tap_whoop.run import DELETIONS_KEY, LEDGER_STREAMS
from tap_whoop.stop import STOP

if t.TYPE_CHECKING:
    from tap_whoop.run import Run

logger = logging.getLogger("tap-whoop")

Phase = t.Literal["all", "incremental", "backfill"]


@dataclass
class Progress:
    """A run's passes so far, over the services of `run`."""

    run: Run
    #: Which pass of the run is under way (see `TapWhoop.sync_members`).
    phase: Phase = "all"
    #: Members left alone this run: webhooks keep them fresh until their next reconciliation.
    resting: set[str] = field(default_factory=set)
    #: Members whose incremental sync the run's budget could not hold, and what limited it.
    deferred: dict[str, str] = field(default_factory=dict)
    #: Members with history to read in the run's second pass.
    backfilling: set[str] = field(default_factory=set)
    #: Members with history still to read after this run, and what stopped the reading.
    backfill_left: dict[str, str] = field(default_factory=dict)
    #: Members whose profile and body measurement this run has read.
    details_read: set[str] = field(default_factory=set)
    #: Requests one member's collections take in an incremental sync, about.
    incremental_cost: int = 4
    #: Requests reading a member's profile and body measurement takes.
    details_cost: int = 2
    #: Requests the run had sent when its history pass began (None before it).
    history_from: int | None = None
    #: Member streams in a row whose endpoint kept failing (`FAILING_IN_A_ROW_ENDS_THE_RUN`).
    endpoints_failing_in_a_row: int = 0
    #: Members whose collections this run reads whatever the webhooks say (events missed).
    must_reconcile: set[str] = field(default_factory=set)
    #: The tap's notes beside the bookmarks in its state, which the run's deletions go into.
    notes: dict[str, t.Any] = field(default_factory=dict)
    _ledger_warned: set[str] = field(default_factory=set)

    def admits(self, requests: float) -> str | None:
        """None when the budget holds `requests` more; else what limits it.

        "run" (`max_requests_per_run`), "day" (WHOOP's daily window), in the history pass
        "history" (`max_history_requests_per_run`), or "signal" once SIGTERM or SIGINT asked
        the run to stop (`tap_whoop.stop`).
        """
        if STOP.requested:
            return "signal"
        budget = self.run.budget
        left, limit = budget.room()
        cap = self.run.settings.max_history_requests_per_run
        if self.phase == "backfill" and cap is not None and self.history_from is not None:
            history_left = cap - (budget.sent - self.history_from)
            if history_left < left:
                left, limit = history_left, "history"
        return limit if left < requests else None

    def note_deleted(self, user_id: int, stream: str, record_ids: t.Iterable[str]) -> None:
        """Note deletions emitted in the state (`DELETIONS_KEY`).

        The ledger forgets them once a later run's incoming state shows a target committed them.
        """
        deletions = self.notes.setdefault(DELETIONS_KEY, {})
        noted = deletions.setdefault(str(user_id), {}).setdefault(stream, [])
        noted.extend(record_id for record_id in record_ids if record_id not in noted)

    def deleted_in_this_run(self, user_id: int, stream: str, record_id: str) -> bool:
        """Whether this run already emitted the record's deletion."""
        deletions = self.notes.get(DELETIONS_KEY, {})
        return record_id in deletions.get(str(user_id), {}).get(stream, ())

    def warn_ledger_missing(self, key: str, user_id: int) -> None:
        """A full read of a member synced before finds no ledger: say what that costs, once."""
        run = self.run
        if key in self._ledger_warned or key not in run.synced_before:
            return
        self._ledger_warned.add(key)
        if any(run.inbox.known(user_id, stream) for stream in LEDGER_STREAMS):
            return
        where = run.stores.inbox_where
        logger.warning(
            "member %r: the ledger of emitted records (%s) has nothing of this member, who was "
            "synced before: it is missing or was reset, so this full read cannot find records "
            "WHOOP deleted outside the incremental window. It is rebuilt as this run emits "
            "records; run a full refresh again (`meltano run --full-refresh …`) to compare",
            key,
            where,
        )
