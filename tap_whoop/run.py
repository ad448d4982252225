"""What one run shares, built once from the settings.

The app, the token store, the members, the pacer and the API root: the streams, `--test`,
`auth` and `revoke` are handed them. The token store, the inbox and the pacer's window are files
beside each other, or, with `store_url`, tables in PostgreSQL (`tap_whoop.stores.postgres`).
"""

from __future__ import annotations

import hashlib
import logging
import time
import typing as t
from dataclasses import dataclass, field
from functools import cached_property

from tap_whoop.errors import FIX, ConfigError, Fix, Invocation, MemberError, MembersFailedError
from tap_whoop.http import (
    AppPacer,
    MemberClient,
    RequestBudget,
)
from tap_whoop.oauth.app import WhoopApp
from tap_whoop.oauth.member import MemberAuth
from tap_whoop.settings import DEFAULT_MEMBER, Settings, configured_members, shard_of
from tap_whoop.stores.backends import FileStores, PostgresStores, open_stores
from tap_whoop.stores.tokens import IDENTITY_UNVERIFIED, TokenStorage

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from tap_whoop.stores.inbox import Inbox

logger = logging.getLogger("tap-whoop")

#: A run syncs every member's new records first, then reads histories with what is left
#: (`TapWhoop.sync_members`); "all" reads both at once, as the SDK's own `sync_all` does.

LEDGER_STREAMS = ("cycles", "recovery", "sleep", "workout")
"""The collections whose emitted keys the ledger keeps."""
DELETIONS_KEY = "whoop_deletions"
"""The state's note of the deletions a run emitted: user id -> stream -> record ids."""
RECEIVER_TIMEOUT_SECONDS = 0.5
"""How long the receiver's inbox write may wait (a lock, a slow disk or server) before a 503."""


@dataclass
class Member:
    """A WHOOP member synced in this run, under the key the config gives them."""

    key: str
    auth: MemberAuth
    user_id: int | None = None
    failure: str | None = None
    stream_failures: dict[str, str] = field(default_factory=dict)

    def skips(self, stream: str) -> bool:
        """Whether nothing more is to be synced from `stream` for this member in this run."""
        return self.failure is not None or stream in self.stream_failures


class Members:
    """This run's members, found by config key (profile) or WHOOP user id (everything else)."""

    def __init__(
        self,
        members: list[Member],
        invocation: Callable[[], Invocation],
        store: TokenStorage | None = None,
    ) -> None:
        self.by_key = {member.key: member for member in members}
        self._by_user_id: dict[int, Member] = {}
        self._invocation = invocation
        self._store = store

    def __iter__(self) -> Iterator[Member]:
        return iter(self.by_key.values())

    def __len__(self) -> int:
        return len(self.by_key)

    def identify(self, key: str, user_id: int) -> None:
        """Remember whose records carry `user_id`, learnt from the member's profile.

        The token store learns it too (once), so that `revoke` can tell which keys are the
        same WHOOP user.
        """
        member = self.by_key[key]
        member.user_id = user_id
        self._by_user_id[user_id] = member
        if self._store is not None:
            entry = self._store.get(key)
            if entry is not None and (
                entry.get("user_id") != user_id or entry.get(IDENTITY_UNVERIFIED)
            ):
                self._store.update_member(key, user_id=user_id, **{IDENTITY_UNVERIFIED: False})

    def identity_problem(self, key: str, user_id: int) -> str | None:
        """Why a profile of `user_id` cannot be member `key`'s: its token is another user's.

        Checked whenever the token's lineage changed since the store learnt the member's user
        id, before anything of the member is read or reconciled.
        """
        entry = (self._store.get(key) if self._store is not None else None) or {}
        stored = entry.get("user_id")
        if not isinstance(stored, int) or stored == user_id:
            return None
        if not self.by_key[key].auth.identity_unverified(entry):
            return None
        return (
            f"member {key!r}: its refresh token is WHOOP user {user_id}'s, but the token store has "
            f"member {key!r} as user {stored}; nothing of it was synced or marked deleted. Give "
            f"user {stored}'s refresh token back, sync user {user_id} under another key, or "
            f"authorize again with `{FIX}`"
        )

    def known_user_ids(self) -> dict[str, int]:
        """Member key -> WHOOP user id, for members whose profile this or an earlier run read.

        A member whose token's lineage changed since is left out until its profile is read:
        the token may be another user's.
        """
        return {key: user_id for key, (user_id, sure) in self._user_ids().items() if sure}

    def unverified_user_ids(self) -> dict[int, str]:
        """Stored user id -> key, for members whose token's lineage changed since."""
        return {user_id: key for key, (user_id, sure) in self._user_ids().items() if not sure}

    def _user_ids(self) -> dict[str, tuple[int, bool]]:
        stored = self._store.read()["members"] if self._store is not None else {}
        found = {}
        for member in self:
            if member.user_id is not None:
                found[member.key] = (member.user_id, True)
                continue
            entry = stored.get(member.key, {})
            user_id = entry.get("user_id")
            if isinstance(user_id, int) and not isinstance(user_id, bool):
                found[member.key] = (user_id, not member.auth.identity_unverified(entry))
        return found

    def for_context(self, context: Mapping[str, t.Any] | None) -> Member:
        """The member a stream partition belongs to."""
        if context and "member" in context:
            return self.by_key[context["member"]]
        if context and "user_id" in context:
            return self._by_user_id[context["user_id"]]
        raise LookupError(f"no member in stream context {dict(context or {})}")

    def fail(self, member: Member, stream: str, error: MemberError) -> None:
        """Stop syncing a member (or one of their streams) for the rest of the run, and say why."""
        message = error.render(self._invocation())
        if error.whole_member:
            member.failure = message
        else:
            member.stream_failures[stream] = message
        logger.error("%s", message)

    @property
    def problems(self) -> list[str]:
        """What could not be synced, one message per member or member's stream."""
        return [
            message
            for member in self
            for message in ([member.failure] if member.failure else member.stream_failures.values())
        ]

    def raise_for_problems(self) -> None:
        """Fail the run, naming every member that could not be fully synced."""
        if problems := self.problems:
            failing = sum(1 for member in self if member.failure or member.stream_failures)
            raise MembersFailedError(
                f"{failing} of {len(self)} member(s) not fully synced "
                "(what is missing keeps its bookmark): " + "; ".join(problems)
            )


@dataclass
class Run:
    """The services one run of the tap (or of `--test`, `auth`, `revoke`) shares."""

    config: Mapping[str, t.Any]
    invocation: Invocation = field(default_factory=Invocation.current)

    @cached_property
    def settings(self) -> Settings:
        """The run's settings, typed, read from `config` once."""
        return Settings.from_config(self.config)

    @cached_property
    def stores(self) -> FileStores | PostgresStores:
        """Where tokens, the inbox and the request window are kept (`store_url` or files)."""
        settings = self.settings
        return open_stores(
            settings.store_url, settings.token_store_path, settings.store_timeout_seconds
        )

    @cached_property
    def file_stores(self) -> FileStores:
        """The files beside `token_store_path`: what `store copy` moves into PostgreSQL."""
        stores = self.stores
        if isinstance(stores, FileStores):
            return stores
        return FileStores(self.settings.token_store_path)

    @property
    def token_store(self) -> TokenStorage:
        """Where every member's rotated tokens live between runs."""
        return self.stores.tokens

    @cached_property
    def app(self) -> WhoopApp:
        """The registered WHOOP app whose credentials every token request sends."""
        return WhoopApp(
            client_id=self.settings.client_id,
            client_secret=self.settings.client_secret,
            oauth_url=self.settings.oauth_url,
        )

    @property
    def api_url(self) -> str:
        """The API root; pointing it elsewhere is how the sandbox is used."""
        return self.settings.api_url

    @cached_property
    def members(self) -> Members:
        """The members of this run, each with its own tokens."""
        return Members(
            [Member(key, self.member_auth(key)) for key, _ in self.synced_members],
            lambda: self.invocation,
            self.token_store,
        )

    @cached_property
    def synced_before(self) -> frozenset[str]:
        """Members whose WHOOP user id the store held when the run began: synced before.

        Read at the run's start (`TapWhoop.sync_members`), before any profile is.
        """
        return frozenset(self.members.known_user_ids())

    @cached_property
    def synced_members(self) -> list[tuple[str, str | None]]:
        """The configured members this process syncs: its `member_shard` of them, or all."""
        members = configured_members(self.config)
        if (shard := self.settings.member_shard) is None:
            return members
        index, count = shard
        mine = [(key, token) for key, token in members if shard_of(key, count) == index]
        logger.info(
            "member_shard %d/%d: this process syncs %d of the %d configured member(s)",
            index,
            count,
            len(mine),
            len(members),
        )
        return mine

    def member_auth(self, key: str) -> MemberAuth:
        """Tokens of the member `key`, configured or only in the token store."""
        configured = dict(configured_members(self.config)).get(key)
        return MemberAuth(key, configured, self.token_store, self.app)

    @cached_property
    def pacer(self) -> AppPacer:
        """The app's rate limit, shared by every stream, member and tap process of the app."""
        app = hashlib.sha256(self.settings.client_id.encode()).hexdigest()[:16]
        ceiling = self.settings.max_requests_per_minute
        return AppPacer(
            ceiling,
            shared_file=self.stores.rate_limit_file(app),
            shared_window=self.stores.rate_window(app, ceiling),
            budget=self.budget,
        )

    @cached_property
    def budget(self) -> RequestBudget:
        """What this run may still send (`max_requests_per_run`, WHOOP's day)."""
        return RequestBudget(self.settings.max_requests_per_run)

    def member_client(self, key: str) -> MemberClient:
        """Calls as member `key` outside a stream, under the policy of the streams."""
        return MemberClient(
            self.api_url,
            self.member_auth(key),
            self.pacer,
            timeout=self.settings.request_timeout,
            max_attempts=self.settings.max_request_attempts,
        )

    @cached_property
    def inbox(self) -> Inbox:
        """The webhook inbox and the ledger of emitted records, beside the token store."""
        return self.stores.inbox()

    @cached_property
    def receiver_inbox(self) -> Inbox:
        """The inbox as the receiver uses it: a write that cannot happen at once fails fast.

        WHOOP allows a delivery a second; a 503 within it is retried, a late 2xx is not seen.
        """
        return self.stores.inbox(timeout=RECEIVER_TIMEOUT_SECONDS)

    @property
    def profile_interval(self) -> float:
        """Seconds between reads of a member's profile and body measurement."""
        return self.settings.profile_interval_hours * 3600

    @property
    def webhook_retention(self) -> float:
        """Seconds an event stays in the log (`webhook_retention_days`)."""
        return self.settings.webhook_retention_days * 86_400

    @property
    def reconcile_interval(self) -> float:
        """Seconds between reads of a member's collections while webhooks arrive."""
        return self.settings.reconcile_interval_hours * 3600

    @cached_property
    def webhooks_flowing(self) -> bool:
        """Whether the receiver stored an event within the reconcile interval.

        Only then may a member's collections rest between reconciliations: a receiver that
        stopped, or was never started, leaves every run reading them.
        """
        last = self.inbox.last_received_at() if self.inbox.exists() else None
        return last is not None and time.time() - last < self.reconcile_interval

    def check_members_have_tokens(self) -> None:
        """A member with no refresh token anywhere is skipped (one error line); the others go on.

        With no member left to sync the run stops before any request, as for a bad setting.
        """
        stored = self.token_store.read()["members"]
        missing = []
        for key, refresh_token in self.synced_members:
            if not refresh_token and key not in stored:
                setting = "refresh_token" if key == DEFAULT_MEMBER else f"users[{key!r}]"
                missing.append(
                    (
                        key,
                        f"{setting}: no refresh token for member {key!r} in the config or in "
                        f"{self.token_store.path}; set it, or run `{FIX}`",
                    )
                )
        if missing and len(missing) == len(self.synced_members):
            key, message = missing[0]
            raise ConfigError(message, Fix.reauthorize(key))
        for key, message in missing:
            self.members.fail(
                self.members.by_key[key], "profile", MemberError(message, Fix.reauthorize(key))
            )
