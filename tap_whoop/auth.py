"""WHOOP OAuth: the rotating-token store and each member's access token.

WHOOP rotates refresh tokens: every refresh returns a new one and kills the old. Meltano hands the
tap a throw-away copy of its config, so the only durable home of a member's current refresh token
is the token store. Every refresh therefore happens under a cross-process lock, re-reads the store
first (another process may have refreshed already), and persists the new token durably before the
new access token is used for anything.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import platformdirs
import requests
import urllib3
from filelock import FileLock, Timeout

from tap_whoop.errors import ConfigError, ReauthorizeError, TapWhoopError, TokenStoreError

if t.TYPE_CHECKING:
    from collections.abc import Iterator

SCOPES = (
    "read:profile",
    "read:body_measurement",
    "read:cycles",
    "read:recovery",
    "read:sleep",
    "read:workout",
    "offline",
)
EXPIRY_MARGIN_SECONDS = 120
LOCK_TIMEOUT_SECONDS = 120
OAUTH_TIMEOUT_SECONDS = 30

logger = logging.getLogger("tap-whoop.auth")


def default_token_store_path() -> Path:
    """Inside a Meltano project (whose `.meltano/` is never committed), else the user data dir."""
    if project_root := os.environ.get("MELTANO_PROJECT_ROOT"):
        return Path(project_root) / ".meltano" / "tap-whoop" / "tokens.json"
    return platformdirs.user_data_path("tap-whoop") / "tokens.json"


def fingerprint(token: str) -> str:
    """Identify a configured refresh token without storing it."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """A JSON file of every member's tokens: mode 0600 in a 0700 directory, replaced atomically."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        self._lock = FileLock(f"{self.path}.lock", timeout=LOCK_TIMEOUT_SECONDS, mode=0o600)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cross-process lock that every read-refresh-write cycle needs."""
        self._ensure_directory()
        try:
            with self._lock:
                yield
        except Timeout:
            raise TokenStoreError(
                f"token store {self.path} is locked by another tap-whoop process for over "
                f"{LOCK_TIMEOUT_SECONDS}s; wait for it to finish, or remove {self._lock.lock_file} "
                "if no tap-whoop process is running"
            ) from None

    def read(self) -> dict[str, t.Any]:
        """Return the store's content; a store that cannot be read is an error, never replaced."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": 1, "members": {}}
        except OSError as exc:
            raise TokenStoreError(
                f"cannot read token store {self.path}: {exc.strerror}; fix its permissions "
                "(it must be readable by the user running the tap)"
            ) from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TokenStoreError(
                f"token store {self.path} is not valid JSON (line {exc.args and _line(exc)}); "
                "restore it from a backup, or move it away and run `tap-whoop auth` again"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("members"), dict):
            raise TokenStoreError(
                f"token store {self.path} has no 'members' object; restore it from a backup, or "
                "move it away and run `tap-whoop auth` again"
            )
        return data

    def write(self, data: dict[str, t.Any]) -> None:
        """Persist durably: temp file, flush, fsync, atomic rename, fsync of the directory."""
        self._ensure_directory()
        tmp_name = None
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=".tokens-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)
                json.dump(data, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
            tmp_name = None
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise TokenStoreError(
                f"cannot write token store {self.path}: {exc.strerror}; make its directory "
                "writable (or set token_store_path), otherwise a rotated WHOOP token would be lost"
            ) from None
        finally:
            if tmp_name:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    def remove_member(self, key: str) -> bool:
        """Forget a member (after revoking); True when it was there."""
        with self.locked():
            data = self.read()
            found = data["members"].pop(key, None) is not None
            if found:
                self.write(data)
        return found

    def _ensure_directory(self) -> None:
        directory = self.path.parent
        if directory.is_dir():
            return
        try:
            directory.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise TokenStoreError(
                f"cannot create token store directory {directory}: {exc.strerror}; "
                "set token_store_path to a writable location"
            ) from None


def _line(exc: ValueError) -> int:
    return getattr(exc, "lineno", 0)


def _connection_never_made(exc: requests.exceptions.RequestException) -> bool:
    """True when the request surely never reached WHOOP, so resending cannot spend a token."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


@dataclass
class WhoopApp:
    """The registered WHOOP app: the token endpoint and the credentials every call sends."""

    client_id: str
    client_secret: str
    oauth_url: str
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def token_url(self) -> str:
        """The OAuth token endpoint."""
        return f"{self.oauth_url.rstrip('/')}/token"

    def authorization_url(self, redirect_uri: str, state: str) -> str:
        """The consent page a member opens once."""
        query = urlencode(
            {
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": " ".join(SCOPES),
                "state": state,
            }
        )
        return f"{self.oauth_url.rstrip('/')}/auth?{query}"

    def refresh(self, refresh_token: str, member: str) -> dict[str, t.Any]:
        """Spend a refresh token; resent only when the first attempt surely never left."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": "offline"}
        return self._token_request(form, member)

    def exchange_code(self, code: str, redirect_uri: str, member: str) -> dict[str, t.Any]:
        """Trade the consent's authorization code for the member's first tokens."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        return self._token_request(form, member)

    def _token_request(self, form: dict[str, str], member: str) -> dict[str, t.Any]:
        form = {**form, "client_id": self.client_id, "client_secret": self.client_secret}
        for attempt in range(3):
            try:
                response = self.session.post(
                    self.token_url, data=form, timeout=OAUTH_TIMEOUT_SECONDS
                )
                break
            except requests.exceptions.RequestException as exc:
                if _connection_never_made(exc) and attempt < 2:
                    time.sleep(2**attempt)
                    continue
                raise TapWhoopError(
                    f"member {member!r}: cannot reach WHOOP's token endpoint {self.token_url} "
                    f"({type(exc).__name__}); the stored token was kept, run again later"
                ) from None
        return self._parse_token_response(response, member)

    def _parse_token_response(self, response: requests.Response, member: str) -> dict[str, t.Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if response.status_code == 401 and error == "invalid_client":
            raise ConfigError(
                "WHOOP rejected client_id/client_secret (invalid_client); copy them again from "
                "the WHOOP developer dashboard"
            )
        if response.status_code in (400, 401):
            raise ReauthorizeError(
                member, f"WHOOP rejected the refresh token ({error or response.status_code})"
            )
        if response.status_code != 200 or not isinstance(body, dict):
            raise TapWhoopError(
                f"member {member!r}: WHOOP's token endpoint answered HTTP "
                f"{response.status_code} with an unreadable body; the stored token was kept, "
                "run again later"
            )
        if not body.get("access_token"):
            raise TapWhoopError(
                f"member {member!r}: WHOOP's token response has no access_token; the stored "
                "token was kept, run again later"
            )
        return body


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class MemberAuth:
    """One member's access token, refreshed through the shared store and never printed."""

    def __init__(
        self,
        key: str,
        configured_refresh_token: str | None,
        store: TokenStore,
        app: WhoopApp,
    ) -> None:
        self.key = key
        self._configured = configured_refresh_token
        self._store = store
        self._app = app
        self._access_token: str | None = None
        self._expires_at = 0.0
        self._refreshed_token: str | None = None
        self._rejected_token: str | None = None

    def access_token(self) -> str:
        """A usable access token, refreshing (once, across processes) when none is."""
        if self._access_token and self._expires_at - EXPIRY_MARGIN_SECONDS > time.time():
            return self._access_token
        with self._store.locked():
            data = self._store.read()
            entry = data["members"].get(self.key, {})
            configured = fingerprint(self._configured) if self._configured else None
            reseeded = configured is not None and entry.get("seeded_from") != configured
            if not reseeded and self._usable(entry):
                self._adopt(entry)
                return t.cast(str, self._access_token)
            refresh_token = self._configured if reseeded else entry.get("refresh_token")
            if not refresh_token:
                raise ReauthorizeError(
                    self.key, "no refresh token in the config or the token store"
                )
            if reseeded and entry:
                logger.info("Member %r: using the new refresh_token from the config", self.key)
            tokens = self._app.refresh(refresh_token, self.key)
            entry = {
                "refresh_token": tokens.get("refresh_token") or refresh_token,
                "access_token": tokens["access_token"],
                "expires_at": time.time() + float(tokens.get("expires_in") or 3600),
                "scope": tokens.get("scope", entry.get("scope")),
                "seeded_from": configured or entry.get("seeded_from"),
                "updated_at": _utc_now(),
            }
            data["members"][self.key] = entry
            self._store.write(data)
            self._refreshed_token = entry["access_token"]
            self._adopt(entry)
            logger.info("Member %r: access token refreshed; rotated token stored", self.key)
        return t.cast(str, self._access_token)

    def reject(self, access_token: str) -> bool:
        """Handle a 401: True when one refresh is worth trying, False when it was just tried."""
        if access_token == self._refreshed_token:
            return False
        self._rejected_token = access_token
        self._access_token = None
        return True

    def _usable(self, entry: dict[str, t.Any]) -> bool:
        return (
            bool(entry.get("access_token"))
            and entry["access_token"] != self._rejected_token
            and float(entry.get("expires_at", 0)) - EXPIRY_MARGIN_SECONDS > time.time()
        )

    def _adopt(self, entry: dict[str, t.Any]) -> None:
        self._access_token = entry["access_token"]
        self._expires_at = float(entry["expires_at"])


def store_consent(
    store: TokenStore, key: str, tokens: dict[str, t.Any], configured_refresh_token: str | None
) -> None:
    """Record a member's freshly consented tokens, replacing what the store had for them.

    The config's current refresh token is marked as already seen, so that it does not override
    the newer consent on the next run.
    """
    if not tokens.get("refresh_token"):
        raise TapWhoopError(
            "WHOOP issued no refresh token; the consent must include the `offline` scope"
        )
    with store.locked():
        data = store.read()
        previous = data["members"].get(key, {})
        data["members"][key] = {
            "refresh_token": tokens["refresh_token"],
            "access_token": tokens["access_token"],
            "expires_at": time.time() + float(tokens.get("expires_in") or 3600),
            "scope": tokens.get("scope"),
            "seeded_from": (
                fingerprint(configured_refresh_token)
                if configured_refresh_token
                else previous.get("seeded_from")
            ),
            "updated_at": _utc_now(),
        }
        store.write(data)


def new_state() -> str:
    """The OAuth `state`: random, well over WHOOP's 8-character minimum."""
    return secrets.token_urlsafe(24)


@dataclass
class Member:
    """A WHOOP member synced in this run, under the key the config gives them."""

    key: str
    auth: MemberAuth
    user_id: int | None = None
    failure: str | None = None


class Members:
    """This run's members, found by config key (profile) or WHOOP user id (everything else)."""

    def __init__(self, members: list[Member]) -> None:
        self.by_key = {member.key: member for member in members}
        self._by_user_id: dict[int, Member] = {}

    def __iter__(self) -> Iterator[Member]:
        return iter(self.by_key.values())

    def identify(self, key: str, user_id: int) -> None:
        """Remember whose records carry `user_id`, learnt from the member's profile."""
        member = self.by_key[key]
        member.user_id = user_id
        self._by_user_id[user_id] = member

    def for_context(self, context: t.Mapping[str, t.Any] | None) -> Member:
        """The member a stream partition belongs to."""
        if context and "member" in context:
            return self.by_key[context["member"]]
        if context and "user_id" in context:
            return self._by_user_id[context["user_id"]]
        raise LookupError(f"no member in stream context {dict(context or {})}")

    def fail(self, member: Member, error: Exception) -> None:
        """Stop syncing a member for the rest of the run, and say why."""
        member.failure = str(error)
        logger.error("%s", error)

    @property
    def failures(self) -> list[Member]:
        """Members that could not be synced."""
        return [member for member in self if member.failure]
