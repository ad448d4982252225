"""`tap-whoop` with some of its costs switched off, for record_path.py only: never a product.

Usage: python benchmarks/_without.py PARTS TAP-ARGUMENTS..., PARTS a comma-separated list of
`field-selection` (singer-sdk's per-record walk that drops deselected properties),
`shared-window` (the slot taken per request in the rate-limit file all processes of an app
share) and `inbox` (the SQLite inbox and record ledger: SQLAlchemy's import, the ledger's
writes), or `none`. Each is a cost the shipped tap must keep: switching one off here measures
what it costs, nothing more.
"""

from __future__ import annotations

import sys
import typing as t

PARTS = ("field-selection", "shared-window", "inbox")


class EmptyInbox:
    """An inbox that was never written: no event to drain, a ledger that keeps nothing."""

    def exists(self) -> bool:
        return False

    def remember(self, *_: t.Any) -> None:
        return None

    def known(self, *_: t.Any) -> dict[str, str | None]:
        return {}


def switch_off(parts: set[str]) -> None:
    if "field-selection" in parts:
        import singer_sdk.streams.core

        singer_sdk.streams.core.pop_deselected_record_properties = lambda *_: None  # type: ignore[assignment]
    if "shared-window" in parts:
        from tap_whoop.http import AppPacer

        AppPacer._take_slot = lambda self: None  # type: ignore[method-assign]
    if "inbox" in parts:
        from tap_whoop.run import Run

        Run.inbox = property(lambda self: EmptyInbox())  # type: ignore[assignment,method-assign]


def main() -> None:
    parts = set(sys.argv[1].split(",")) - {"none"}
    unknown = parts - set(PARTS)
    if unknown:
        sys.exit(f"_without.py: unknown parts {sorted(unknown)}; choose from {PARTS} or none")
    switch_off(parts)
    from tap_whoop.cli import main as tap_whoop

    tap_whoop(sys.argv[2:])


if __name__ == "__main__":
    main()
