"""Each member's access token: refreshed through the token store, once across processes.

Every refresh happens under the member's lock, re-reads the entry first (another process may
have refreshed already), records the refresh before spending the token (which proves the write),
and persists the new token durably before the new access token is used for anything.
"""

from __future__ import annotations

import logging
import time
import typing as t
from urllib.parse import urlsplit

from tap_whoop.errors import (
    FIX,
    Fix,
    MemberError,
    ReauthorizeError,
    TapWhoopError,
    TokenStoreError,
)
from tap_whoop.oauth.app import (
    DEFAULT_LIFETIME_SECONDS,
    MAX_LIFETIME_SECONDS,
    UnansweredError,
    WhoopApp,
    is_number,
    lifetime_of,
    text_field,
)
from tap_whoop.stores.tokens import (
    IDENTITY_UNVERIFIED,
    TokenStorage,
    accounts_for,
    fingerprint,
    in_flight,
    moved_past,
    utc_now,
)

EXPIRY_MARGIN_SECONDS = 120
PERSIST_ATTEMPTS = 3
logger = logging.getLogger("tap-whoop.auth")


def _margin(lifetime: float) -> float:
    """Refresh this long before expiry: two minutes, or a tenth of a short-lived token's life."""
    return min(float(EXPIRY_MARGIN_SECONDS), lifetime / 10)


def _expiry(entry: t.Mapping[str, t.Any]) -> float:
    """The entry's expiry; one that cannot be true (infinite, NaN, days away) means "expired"."""
    value = entry.get("expires_at", 0)
    if not is_number(value) or value > time.time() + MAX_LIFETIME_SECONDS:
        return 0.0
    return float(value)


class MemberAuth:
    """One member's access token, refreshed through the shared store and never printed."""

    def __init__(
        self,
        key: str,
        configured_refresh_token: str | None,
        store: TokenStorage,
        app: WhoopApp,
    ) -> None:
        self.key = key
        self._configured = configured_refresh_token
        self._store = store
        self._app = app
        self._access_token: str | None = None
        self._expires_at = 0.0
        self._lifetime = float(DEFAULT_LIFETIME_SECONDS)
        self._rejected_token: str | None = None
        self._retry_token: str | None = None

    def access_token(self, *, force_refresh: bool = False) -> str:
        """A usable access token, refreshing (once, across processes) when none is.

        `force_refresh` spends the refresh token even when the stored access token is still good:
        the credential check proves that way that the member's refresh token is alive.
        """
        if (
            not force_refresh
            and self._access_token
            and self._expires_at - _margin(self._lifetime) > time.time()
        ):
            return self._access_token
        with self._store.locked(self.key):
            entry = self._entry(self._store.get(self.key))
            self._refuse_another_issuers(entry)
            configured = fingerprint(self._configured) if self._configured else None
            reseeded = configured is not None and not accounts_for(entry, configured)
            if not reseeded and not force_refresh and self._usable(entry):
                self._adopt(entry)
                return t.cast(str, self._access_token)
            self._refresh(entry, configured, reseeded=reseeded)
        return t.cast(str, self._access_token)

    def _refresh(
        self,
        entry: dict[str, t.Any],
        configured: str | None,
        *,
        reseeded: bool,
    ) -> None:
        """Spend the refresh token (inside the lock); store its successor before any use.

        Before the token is spent, the entry records that a refresh of it is in flight, written
        the way the successor will be: that proves the write, and tells the next run, should
        this one be killed before the successor is stored, why WHOOP rejects the old token.
        """
        refresh_token = self._configured if reseeded else entry.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            raise ReauthorizeError(self.key, "no refresh token in the config or the token store")
        source = ""
        if reseeded and entry.get("refresh_token"):
            logger.info("Member %r: using the new refresh_token from the config", self.key)
            source = (
                " from the config (new to the token store; if it is an old one, remove it from "
                "the config)"
            )
        spending = fingerprint(refresh_token)
        interrupted = in_flight(entry) == spending
        before = self._store.get(self.key)
        self._store.record(
            self.key, {**entry, "refreshing": {"token": spending, "since": utc_now()}}
        )
        try:
            tokens = self._app.refresh(refresh_token, self.key, source, interrupted=interrupted)
        except UnansweredError:
            raise
        except TapWhoopError:
            self._store.restore(self.key, before)
            raise
        access_token = text_field(tokens, "access_token")
        updated = {
            **entry,
            "refresh_token": text_field(tokens, "refresh_token") or refresh_token,
            "access_token": access_token,
            "expires_at": time.time() + lifetime_of(tokens) if access_token else 0.0,
            "lifetime": lifetime_of(tokens),
            "scope": text_field(tokens, "scope") or entry.get("scope"),
            "seeded_from": configured or entry.get("seeded_from"),
            "seen": moved_past(entry, entry.get("refresh_token"), refresh_token),
            "issuer": issuer_of(self._app.oauth_url),
            "updated_at": utc_now(),
        }
        updated.pop("refreshing", None)
        if reseeded and entry.get("user_id") is not None:
            updated[IDENTITY_UNVERIFIED] = True  # until the profile shows whose token this is
        self._persist(updated)
        if not access_token:
            raise MemberError(
                f"member {self.key!r}: WHOOP's token response had no access_token; its "
                "refresh token was saved, run again later"
            )
        if self._rejected_token is not None:
            self._retry_token, self._rejected_token = access_token, None
        self._adopt(updated)
        logger.info("Member %r: access token refreshed; rotated token stored", self.key)

    def _refuse_another_issuers(self, entry: t.Mapping[str, t.Any]) -> None:
        """An entry whose tokens another OAuth host issued is never used, nor overwritten.

        E.g. the sandbox pointed at the real token store (a Meltano `.env` overrides an
        environment's `config:`): its seed token would replace the member's real rotated one.
        """
        issuer = entry.get("issuer")
        ours = issuer_of(self._app.oauth_url)
        if not isinstance(issuer, str) or issuer == ours:
            return
        raise MemberError(
            f"member {self.key!r}: the token store {self._store.path} holds tokens issued by "
            f"{issuer}, but this run's oauth_url is at {ours}; nothing was spent or changed. A run "
            "against another server (the sandbox?) needs a token store of its own "
            "(token_store_path, or store_url unset); if WHOOP moved its OAuth URL, "
            f"re-authorize with `{FIX}`",
            Fix.reauthorize(self.key),
        )

    def identity_unverified(self, entry: t.Mapping[str, t.Any]) -> bool:
        """Whether the entry's WHOOP user id may not be this member's token's any more.

        So when the config's refresh token is new to the store (pasted, or copied from another
        store) or a refresh of one happened and no profile has been read since.
        """
        if entry.get(IDENTITY_UNVERIFIED):
            return True
        configured = fingerprint(self._configured) if self._configured else None
        return configured is not None and bool(entry) and not accounts_for(entry, configured)

    def reject(self, access_token: str) -> bool:
        """Handle a 401: True when one more try is worth it, False when it was just tried.

        Decided under the lock, so a refresh another process has in flight is waited for: a
        token another process stored meanwhile is adopted; otherwise the next `access_token`
        refreshes, unless `access_token` is itself the one refreshed after an earlier 401.
        """
        with self._store.locked(self.key):
            entry = self._entry(self._store.get(self.key))
            previous, self._rejected_token = self._rejected_token, access_token
            if self._usable(entry):
                self._adopt(entry)
                return True
            if access_token == self._retry_token:
                self._rejected_token = previous
                return False
        self._access_token = None
        return True

    def _persist(self, entry: dict[str, t.Any]) -> None:
        """Write the rotated token, retrying briefly: WHOOP has already killed the old one."""
        for attempt in range(PERSIST_ATTEMPTS):
            try:
                self._store.put(self.key, entry)
                return
            except TokenStoreError as exc:
                if attempt + 1 < PERSIST_ATTEMPTS:
                    time.sleep(0.5)
                    continue
                raise TokenStoreError(
                    f"member {self.key!r}: WHOOP rotated the refresh token but it could not be "
                    f"saved ({exc}); nothing was synced with it. Fix the store, then re-authorize "
                    f"with `{FIX}`",
                    Fix.reauthorize(self.key),
                ) from None

    def _entry(self, stored: dict[str, t.Any] | None) -> dict[str, t.Any]:
        entry = dict(stored or {})
        expires = entry.get("expires_at", 0)
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            raise TokenStoreError(
                f"token store {self._store.path}: member {self.key!r} has a malformed entry "
                f"(expires_at); it was left as it is: restore it, or re-authorize with `{FIX}`",
                Fix.reauthorize(self.key),
            )
        return entry

    def _usable(self, entry: dict[str, t.Any]) -> bool:
        token = entry.get("access_token")
        return (
            isinstance(token, str)
            and bool(token)
            and token != self._rejected_token
            and _expiry(entry) - _margin(lifetime_of(entry, "lifetime")) > time.time()
        )

    def _adopt(self, entry: dict[str, t.Any]) -> None:
        self._access_token = entry["access_token"]
        self._expires_at = _expiry(entry)
        self._lifetime = lifetime_of(entry, "lifetime")


def issuer_of(oauth_url: str) -> str:
    """The host that issues an app's tokens (a sandbox's port may change between runs)."""
    return (urlsplit(oauth_url).hostname or oauth_url).lower()


def store_consent(
    store: TokenStorage,
    key: str,
    tokens: dict[str, t.Any],
    configured_refresh_token: str | None,
    *,
    issuer: str | None = None,
) -> None:
    """Record a member's freshly consented tokens, replacing what the store had for them.

    The config's current refresh token (and the member's previous stored one) are marked as
    already seen, so that an old token left in the config does not override the newer consent.
    """
    refresh_token = text_field(tokens, "refresh_token")
    if not refresh_token:
        raise TapWhoopError(
            f"member {key!r}: WHOOP issued no refresh token; the consent must include the "
            "`offline` scope (nothing was stored)"
        )
    with store.locked():
        data = store.read()
        previous = data["members"].get(key, {})
        data["members"][key] = {
            "refresh_token": refresh_token,
            "access_token": text_field(tokens, "access_token"),
            "expires_at": time.time() + lifetime_of(tokens),
            "lifetime": lifetime_of(tokens),
            "scope": text_field(tokens, "scope"),
            "seeded_from": (
                fingerprint(configured_refresh_token)
                if configured_refresh_token
                else previous.get("seeded_from")
            ),
            "seen": moved_past(previous, previous.get("refresh_token"), configured_refresh_token),
            **({"issuer": issuer_of(issuer)} if issuer else {}),
            "updated_at": utc_now(),
        }
        store.write(data)
