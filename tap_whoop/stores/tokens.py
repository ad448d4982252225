"""The token store's contract, and the rules of a member's entry that every backend keeps.

WHOOP rotates refresh tokens: every refresh returns a new one and kills the old. Meltano hands the
tap a throw-away copy of its config, so the only durable home of a member's current refresh token
is the token store. An entry remembers the fingerprints of the tokens it moved past, which is how
a token is told newer or older than another without trusting any clock.
"""

from __future__ import annotations

import datetime
import hashlib
import typing as t

if t.TYPE_CHECKING:
    from pathlib import Path

LOCK_TIMEOUT_SECONDS = 120
SEEN_TOKENS_KEPT = 50
IDENTITY_UNVERIFIED = "identity_unverified"
"""An entry's mark that its refresh token's lineage changed since its user id was learnt."""


def fingerprint(token: str) -> str:
    """Identify a refresh token without storing it."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class TokenStorage(t.Protocol):
    """Where every member's tokens live: `TokenStore` (a file) or a PostgreSQL database.

    A refresh touches one member: `locked(key)` serialises that member's read-refresh-write
    cycle across processes (re-entrant), `get` reads its entry, `record` writes it before the
    token is spent (proving that the successor can be written the same way) and `put` writes
    the successor; both are durable before they return. The whole document,
    `{"version": 1, "members": {key: entry}}`, is for `auth`, `revoke` and `store copy`
    (`locked()`, `read`, `write`, `prove_writable`).
    """

    @property
    def path(self) -> Path | str:
        """Where the store is, for messages (never with a password)."""

    def locked(self, key: str | None = None) -> t.ContextManager[None]:
        """Hold the lock of member `key`'s cycle, or of the whole store (None)."""

    def get(self, key: str) -> dict[str, t.Any] | None:
        """Member `key`'s entry; None when the store has none."""

    def record(self, key: str, entry: dict[str, t.Any]) -> None:
        """Write `entry` before a token is spent, proving room for its successor."""

    def put(self, key: str, entry: dict[str, t.Any]) -> None:
        """Persist member `key`'s `entry` durably (a rotated token)."""

    def restore(self, key: str, entry: dict[str, t.Any] | None) -> None:
        """Put back `entry` as member `key`'s (None: no entry); best effort."""

    def read(self) -> dict[str, t.Any]:
        """The store's content."""

    def write(self, data: dict[str, t.Any]) -> None:
        """Persist `data` durably."""

    def prove_writable(self) -> None:
        """Show, before a token is spent, that the store can be written as it will be."""

    def remove_member(self, key: str) -> bool:
        """Forget a member (after revoking); True when it was there."""

    def update_member(self, key: str, **fields: t.Any) -> None:
        """Add facts (not tokens) to a member's entry, e.g. the WHOOP user id it belongs to."""


class MemberEdits:
    """`remove_member` and `update_member`, for any store with the protocol's other methods."""

    def remove_member(self: TokenStorage, key: str) -> bool:
        """Forget a member (after revoking); True when it was there."""
        with self.locked():
            data = self.read()
            found = data["members"].pop(key, None) is not None
            if found:
                self.write(data)
        return found

    def update_member(self: TokenStorage, key: str, **fields: t.Any) -> None:
        """Add facts (not tokens) to a member's entry, e.g. the WHOOP user id it belongs to."""
        with self.locked(key):
            entry = self.get(key)
            if entry is not None:
                self.put(key, {**entry, **fields})


def descends(candidate: t.Mapping[str, t.Any], entry: t.Mapping[str, t.Any]) -> bool:
    """True when `candidate` holds a refresh token rotated from the one `entry` holds."""
    token = candidate.get("refresh_token")
    current = entry.get("refresh_token")
    if not isinstance(token, str) or not token or token == current:
        return False
    basis = set()
    if isinstance(current, str) and current:
        basis.add(fingerprint(current))
    spending = in_flight(entry)
    if spending:
        basis.add(spending)
    return bool(basis & set(moved_past(candidate)))


def in_flight(entry: t.Mapping[str, t.Any]) -> str | None:
    """The fingerprint of the refresh token a run was spending when it last wrote `entry`."""
    record = entry.get("refreshing")
    token = record.get("token") if isinstance(record, dict) else None
    return token if isinstance(token, str) else None


def _seen_list(entry: t.Mapping[str, t.Any]) -> list[str]:
    seen = entry.get("seen")
    return [fp for fp in seen if isinstance(fp, str)] if isinstance(seen, list) else []


def moved_past(entry: t.Mapping[str, t.Any], *tokens: str | None) -> list[str]:
    """Fingerprints of the tokens the entry has moved past: its list, its seed, and `tokens`."""
    seen = _seen_list(entry)
    for fp in (entry.get("seeded_from"), *(fingerprint(token) for token in tokens if token)):
        if isinstance(fp, str) and fp not in seen:
            seen.append(fp)
    return seen[-SEEN_TOKENS_KEPT:]


def accounts_for(entry: t.Mapping[str, t.Any], configured: str) -> bool:
    """True when the store holds this configured token, or a token it was rotated into."""
    current = entry.get("refresh_token")
    return (
        entry.get("seeded_from") == configured
        or (isinstance(current, str) and fingerprint(current) == configured)
        or configured in _seen_list(entry)
    )


def utc_now() -> str:
    """Now, as an entry's times are written."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
