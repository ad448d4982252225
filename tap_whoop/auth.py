"""WHOOP OAuth: the rotating-token store and each member's access token.

WHOOP rotates refresh tokens: every refresh returns a new one and kills the old. Meltano hands the
tap a throw-away copy of its config, so the only durable home of a member's current refresh token
is the token store. Every refresh therefore happens under a cross-process lock, re-reads the store
first (another process may have refreshed already), proves the store writable before spending the
token, and persists the new token durably before the new access token is used for anything.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import errno
import hashlib
import json
import logging
import math
import os
import re
import secrets
import stat
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

from tap_whoop.deadline import with_deadlines
from tap_whoop.errors import (
    FIX,
    ConfigError,
    Fix,
    MemberError,
    ReauthorizeError,
    TapWhoopError,
    TokenStoreError,
)
from tap_whoop.settings import DEFAULT_OAUTH_URL

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
READ_SCOPES = SCOPES[:-1]
EXPIRY_MARGIN_SECONDS = 120
LOCK_TIMEOUT_SECONDS = 120
OAUTH_TIMEOUT_SECONDS = 30
DEFAULT_LIFETIME_SECONDS = 3600
MAX_LIFETIME_SECONDS = 7 * 24 * 3600
SEEN_TOKENS_KEPT = 50
PERSIST_ATTEMPTS = 3
PROOF_SLACK_BYTES = 8192

logger = logging.getLogger("tap-whoop.auth")


def default_token_store_path() -> Path:
    """Inside a Meltano project (whose `.meltano/` is never committed), else the user data dir."""
    if project_root := os.environ.get("MELTANO_PROJECT_ROOT"):
        return Path(project_root) / ".meltano" / "tap-whoop" / "tokens.json"
    return platformdirs.user_data_path("tap-whoop") / "tokens.json"


def fingerprint(token: str) -> str:
    """Identify a refresh token without storing it."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class _NotAStoreError(TokenStoreError):
    """The store file holds something other than a token store (torn, edited, foreign)."""


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


class TokenStore(MemberEdits):
    """A JSON file of every member's tokens: mode 0600 in a 0700 directory, written durably.

    A symlinked store is followed: the real file is locked and written, the link stays. A store
    that cannot be replaced by a rename (a file bind-mounted into a container) is rewritten in
    place, with the new content first saved to a sibling journal so a torn write is recovered.
    Only a directory the store creates itself is made 0700; an existing one (a home directory, a
    Meltano project's `.meltano/`) is left as it is.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        self.target = Path(os.path.realpath(self.path))
        self._lock = FileLock(f"{self.target}.lock", timeout=LOCK_TIMEOUT_SECONDS, mode=0o600)
        self._temp_prefix = f".{self.target.stem}-"
        self._temp_pattern = re.compile(re.escape(self._temp_prefix) + r"[a-z0-9_]{8}")
        self._mode_warned = False
        #: The document as this process last read or wrote it, and the file's stamp then.
        self._cached: dict[str, t.Any] | None = None
        self._cached_stamp: tuple[int, ...] | None = None

    @contextlib.contextmanager
    def locked(self, key: str | None = None) -> Iterator[None]:
        """Hold the cross-process lock that every read-refresh-write cycle needs.

        One file holds every member, so a member's cycle (`key`) locks the whole file.
        """
        self._ensure_directory()
        self._check_lock_file()
        try:
            with self._lock:
                self._recover()
                yield
        except Timeout:
            raise TokenStoreError(
                f"token store {self.path} is locked by another tap-whoop process for over "
                f"{LOCK_TIMEOUT_SECONDS}s; wait for it to finish, or remove {self._lock.lock_file} "
                "if no tap-whoop process is running"
            ) from None
        except TokenStoreError:
            raise
        except OSError as exc:
            raise TokenStoreError(
                f"cannot lock token store {self.path}: {exc.strerror}; make its directory "
                "writable (or set token_store_path)"
            ) from None

    def _check_lock_file(self) -> None:
        """Tell a lock file that cannot exist from one held: filelock waits out both alike."""
        lock_file = self._lock.lock_file
        try:
            os.close(os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise TokenStoreError(
                f"cannot lock token store {self.path}: cannot create {lock_file} "
                f"({exc.strerror}); the directory {self.target.parent} must be a writable "
                "directory on a real file system: set token_store_path to one"
            ) from None

    def read(self) -> dict[str, t.Any]:
        """Return the store's content; a store that cannot be read is an error, never replaced.

        A store torn by a killed in-place write is first restored from the journal it left. A
        store `tap-whoop store copy` moved to a database is refused: spending its tokens here
        would kill the database's copies.
        """
        data = self.export()
        if isinstance(moved := data.get("moved_to"), str):
            raise TokenStoreError(
                f"token store {self.path} was moved to {moved} by `tap-whoop store copy`: set "
                "store_url to that database (the tokens in this file are no longer current; "
                'to use the file again instead, delete its "moved_to" entry)'
            )
        return data

    def export(self) -> dict[str, t.Any]:
        """The store's content, even when it was moved to a database (for `store copy`)."""
        try:
            return self._read()
        except _NotAStoreError:
            if not self._orphans():
                raise
        with self.locked():
            return self._read()

    def mark_moved(self, where: str) -> None:
        """Record (under the lock) that the tokens now live in `where`: `read` refuses from now."""
        with self.locked():
            data = self.export()
            data["moved_to"] = where
            data["moved_at"] = _utc_now()
            try:
                self._commit(_dump(data))
            except OSError as exc:
                raise TokenStoreError(
                    self._cannot_write(
                        exc,
                        f"the tokens were copied to {where}, but this file "
                        "was not marked as moved: stop using it (set store_url)",
                    )
                ) from None

    def _read(self) -> dict[str, t.Any]:
        try:
            text = self.target.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": 1, "members": {}}
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise TokenStoreError(
                f"cannot read token store {self.path}: {reason}; it must be a file readable by "
                "the user running the tap (restore it, or point token_store_path elsewhere)"
            ) from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise _NotAStoreError(
                f"token store {self.path} is not valid JSON (line {getattr(exc, 'lineno', '?')}); "
                "it was left as it is: restore it from a backup, or move it away and run "
                "`tap-whoop auth` again"
            ) from None
        if not _is_store(data):
            raise _NotAStoreError(
                f"token store {self.path} is not a tap-whoop token store (no 'members' object of "
                "member entries); it was left as it is: restore it from a backup, or move it away "
                "and run `tap-whoop auth` again"
            )
        self._tighten_mode()
        return t.cast(dict[str, t.Any], data)

    def get(self, key: str) -> dict[str, t.Any] | None:
        """Member `key`'s entry, parsing the file again only when it changed since."""
        entry = self._document()["members"].get(key)
        return copy.deepcopy(entry) if isinstance(entry, dict) else None

    def record(self, key: str, entry: dict[str, t.Any]) -> None:
        """Write `entry` before a token is spent, with room proven for a larger successor.

        The commit is the way the successor will be written, so it also proves that the file
        can be replaced (not immutable, not read-only); its temp file first holds
        PROOF_SLACK_BYTES more, which catches a disk or quota too full for the successor.
        """
        self._put(key, entry, "no refresh token was spent", slack=PROOF_SLACK_BYTES)

    def put(self, key: str, entry: dict[str, t.Any]) -> None:
        """Persist member `key`'s `entry` durably: see `_commit`."""
        self._put(key, entry, "otherwise a rotated WHOOP token would be lost")

    def restore(self, key: str, entry: dict[str, t.Any] | None) -> None:
        """Put back `entry` as member `key`'s (None: no entry); best effort."""
        try:
            with self.locked():
                data = self._document()
                members = {name: item for name, item in data["members"].items() if name != key}
                if entry is not None:
                    members[key] = entry
                self._commit_document({**data, "members": members})
        except (OSError, TokenStoreError) as exc:
            logger.warning("Could not restore token store %s: %s", self.path, exc)

    def write(self, data: dict[str, t.Any]) -> None:
        """Persist durably: see `_commit`."""
        try:
            self._commit_document(copy.deepcopy(data))
        except OSError as exc:
            raise TokenStoreError(
                self._cannot_write(exc, "otherwise a rotated WHOOP token would be lost")
            ) from None

    def _put(self, key: str, entry: dict[str, t.Any], consequence: str, slack: int = 0) -> None:
        with self.locked():
            data = self._document()
            try:
                self._commit_document(
                    {**data, "members": {**data["members"], key: copy.deepcopy(entry)}},
                    slack=slack,
                )
            except OSError as exc:
                raise TokenStoreError(self._cannot_write(exc, consequence)) from None

    def _commit_document(self, data: dict[str, t.Any], slack: int = 0) -> None:
        self._commit(_dump(data), slack=slack)
        self._cached, self._cached_stamp = data, self._stamp()

    def _document(self) -> dict[str, t.Any]:
        """The store's content as last read or written here, unless the file changed since.

        At a thousand members, parsing the whole file for each member's refresh cost more than
        the refresh; a file another process replaced or rewrote has another stamp.
        """
        stamp = self._stamp()
        if self._cached is not None and stamp is not None and stamp == self._cached_stamp:
            return self._cached
        data = self.read()
        self._cached, self._cached_stamp = (data, stamp) if stamp is not None else (None, None)
        return data

    def _stamp(self) -> tuple[int, ...] | None:
        """What changes whenever the file is replaced or rewritten (None: no file)."""
        try:
            found = os.stat(self.target)
        except OSError:
            return None
        return (found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)

    def prove_writable(self) -> None:
        """Show, before a token is spent, that the store can be written as it will be.

        A temp file larger than the store will become catches a read-only directory, a full
        disk or a quota; rewriting the store's own bytes the way a rotated token is written
        catches a file that can be created beside but not replaced (immutable, bind-mounted).
        """
        with self.locked():
            try:
                size = self.target.stat().st_size
            except OSError:
                size = 0
            tmp_name = None
            try:
                tmp_name = self._temp_file(b" " * (size + PROOF_SLACK_BYTES))
                os.unlink(tmp_name)
                tmp_name = None
                with contextlib.suppress(FileNotFoundError):
                    self._commit(self.target.read_bytes())
            except OSError as exc:
                raise TokenStoreError(
                    self._cannot_write(exc, "no refresh token was spent")
                ) from None
            finally:
                if tmp_name:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp_name)

    def _cannot_write(self, exc: OSError, consequence: str) -> str:
        if exc.errno in (errno.EPERM, errno.EACCES) and self.target.exists():
            fix = (
                f"the file refuses changes: if it is immutable run `chattr -i {self.target}`, "
                "otherwise make it and its directory writable (or set token_store_path)"
            )
        else:
            fix = "make its directory writable (or set token_store_path)"
        return f"cannot write token store {self.path}: {exc.strerror}; {fix}; {consequence}"

    def _commit(self, payload: bytes, slack: int = 0) -> None:
        """Temp file, fsync, rename, fsync of the directory.

        A file that cannot be renamed onto (EBUSY: bind-mounted; EXDEV) is rewritten in place;
        the temp file then stays as a journal until that write is complete, so a write torn by
        a kill is recovered by the next run.
        """
        self._ensure_directory()
        journal: str | None = self._temp_file(payload, slack)
        try:
            try:
                os.replace(t.cast(str, journal), self.target)
                journal = None
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.EXDEV):
                    raise
                handle = open(self.target, "r+b")  # noqa: SIM115 - the journal is kept from here
                kept, journal = journal, None
                with handle:
                    handle.write(payload)
                    handle.truncate()
                    handle.flush()
                    os.fsync(handle.fileno())
                os.unlink(t.cast(str, kept))
            self._fsync_directory()
        finally:
            if journal:
                with contextlib.suppress(OSError):
                    os.unlink(journal)

    def _fsync_directory(self) -> None:
        dir_fd = os.open(self.target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _temp_file(self, payload: bytes, slack: int = 0) -> str:
        """A private, fsync'd file in the store's directory holding `payload`; its name.

        `slack`: that many bytes more are written and synced first, then cut, proving the room.
        """
        fd, name = tempfile.mkstemp(prefix=self._temp_prefix, dir=self.target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(payload)
                if slack:
                    handle.write(b" " * slack)
                    handle.flush()
                    os.fsync(handle.fileno())
                    handle.truncate(len(payload))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        return name

    def _orphans(self) -> list[Path]:
        """Temp files an interrupted write left beside the store, oldest first."""
        try:
            names = os.listdir(self.target.parent)
        except OSError:
            return []
        found = []
        for name in names:
            if self._temp_pattern.fullmatch(name):
                path = self.target.parent / name
                with contextlib.suppress(OSError):
                    found.append((path.stat().st_mtime_ns, path))
        return [path for _, path in sorted(found)]

    def _recover(self) -> None:
        """Take back what an interrupted write left in temp files, then remove them.

        A member's entry in a temp file wins when it rotated past the store's token; a store
        torn by an interrupted in-place write is replaced by its newest journal. Runs under the
        lock, where no other process is writing.
        """
        orphans = self._orphans()
        if not orphans:
            return
        contents = [(path, _load_store(path)) for path in orphans]
        try:
            current = json.loads(self.target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            current = None
        if not _is_store(current):
            valid = [(path, data) for path, data in contents if data is not None]
            if not valid:
                return
            path, current = valid[-1]
            logger.warning(
                "Token store %s was torn by an interrupted write; restored it from %s",
                self.path,
                path.name,
            )
            merged = True
        else:
            merged = False
        members = t.cast(dict[str, t.Any], current)["members"]
        for path, data in contents:
            for key, entry in (data or {}).get("members", {}).items():
                if key in members and _descends(entry, members[key]):
                    members[key] = entry
                    merged = True
                    logger.warning(
                        "Member %r: recovered the rotated token an interrupted run left in %s",
                        key,
                        path.name,
                    )
        try:
            if merged:
                self._commit(_dump(t.cast(dict[str, t.Any], current)))
            for path in orphans:
                path.unlink(missing_ok=True)
            self._fsync_directory()
        except OSError as exc:
            raise TokenStoreError(
                self._cannot_write(exc, "the tokens left by an interrupted run were kept")
            ) from None

    def beside(self, name: str) -> Path:
        """A file in the store's private directory, for state other tap processes share."""
        self._ensure_directory()
        return self.target.parent / name

    def _ensure_directory(self) -> None:
        directory = self.target.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise TokenStoreError(
                f"cannot create token store directory {directory}: {exc.strerror}; "
                "set token_store_path to a writable location"
            ) from None

    def _tighten_mode(self) -> None:
        """A store others can read leaks every member's tokens: make it 0600 again, and say so."""
        try:
            mode = stat.S_IMODE(self.target.stat().st_mode)
        except OSError:
            return
        if not mode & 0o077 or self._mode_warned:
            return
        try:
            os.chmod(self.target, 0o600)
        except OSError as exc:
            self._mode_warned = True
            logger.warning(
                "Token store %s is readable by other users (mode %o) and could not be set to "
                "0600 (%s); set it to 0600 yourself",
                self.path,
                mode,
                exc.strerror,
            )
            return
        logger.warning(
            "Token store %s was readable by other users (mode %o); it was set to 0600",
            self.path,
            mode,
        )


def _dump(data: dict[str, t.Any]) -> bytes:
    """The store as compact JSON, by the C encoder (`indent` would take Python's own).

    Every refresh rewrites every member's entry: at a thousand members, indenting made each
    write about 20 times slower.
    """
    return json.dumps(data, sort_keys=True).encode()


def _is_store(data: t.Any) -> bool:
    members = data.get("members") if isinstance(data, dict) else None
    return isinstance(members, dict) and all(isinstance(entry, dict) for entry in members.values())


def _load_store(path: Path) -> dict[str, t.Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return t.cast(dict[str, t.Any], data) if _is_store(data) else None


def _descends(candidate: t.Mapping[str, t.Any], entry: t.Mapping[str, t.Any]) -> bool:
    """True when `candidate` holds a refresh token rotated from the one `entry` holds."""
    token = candidate.get("refresh_token")
    current = entry.get("refresh_token")
    if not isinstance(token, str) or not token or token == current:
        return False
    basis = set()
    if isinstance(current, str) and current:
        basis.add(fingerprint(current))
    in_flight = _in_flight(entry)
    if in_flight:
        basis.add(in_flight)
    return bool(basis & set(_seen(candidate)))


def _in_flight(entry: t.Mapping[str, t.Any]) -> str | None:
    """The fingerprint of the refresh token a run was spending when it last wrote `entry`."""
    record = entry.get("refreshing")
    token = record.get("token") if isinstance(record, dict) else None
    return token if isinstance(token, str) else None


class _UnansweredError(MemberError):
    """The token request may have reached WHOOP and rotated the token: its answer is unknown."""


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
    session: requests.Session = field(default_factory=lambda: with_deadlines(requests.Session()))

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

    def refresh(
        self, refresh_token: str, member: str, source: str = "", *, interrupted: bool = False
    ) -> dict[str, t.Any]:
        """Spend a refresh token; resent only when the first attempt surely never left.

        `source` says where the token came from, and `interrupted` that an earlier run was
        killed while spending this very token, for the message when WHOOP rejects it.
        """
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": "offline"}
        response = self._token_request(form, member)
        body = self._parse_token_response(response, member)
        if response.status_code in (400, 401) and interrupted:
            raise ReauthorizeError(
                member,
                f"WHOOP rejected the stored refresh token ({describe_status(response)}): the "
                "previous run was interrupted while refreshing it, so WHOOP had likely rotated "
                "it and the new token never reached the tap; no client can recover it, "
                "re-authorizing is the only fix",
            )
        if response.status_code in (400, 401):
            raise ReauthorizeError(
                member, f"WHOOP rejected the refresh token{source} ({describe_status(response)})"
            )
        if response.status_code == 404:
            raise ConfigError(
                f"oauth_url: {self.token_url} answered HTTP 404, so it is not WHOOP's token "
                f"endpoint: set oauth_url to {DEFAULT_OAUTH_URL} (the token endpoint is "
                "{oauth_url}/token); the stored token was kept"
            )
        if response.status_code != 200 or body is None:
            what = "without tokens" if body is not None else "with a body that is not JSON"
            raise MemberError(
                f"member {member!r}: WHOOP's token endpoint answered {describe_status(response)} "
                f"{what}; the stored token was kept, run again later (if it persists, check "
                f"that oauth_url is WHOOP's OAuth root, {DEFAULT_OAUTH_URL})"
            )
        return body

    def exchange_code(self, code: str, redirect_uri: str, member: str) -> dict[str, t.Any]:
        """Trade the consent's authorization code for the member's first tokens."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        response = self._token_request(form, member)
        body = self._parse_token_response(response, member)
        if response.status_code in (400, 401):
            raise TapWhoopError(
                f"member {member!r}: WHOOP rejected the authorization code "
                f"({describe_status(response)}): a code works once, for a few minutes, and "
                "only with the same --redirect-uri; nothing was stored, run `tap-whoop auth` again"
            )
        if response.status_code != 200 or body is None or not _text(body, "access_token"):
            raise TapWhoopError(
                f"member {member!r}: WHOOP's token endpoint answered "
                f"{describe_status(response)} without usable tokens; nothing was stored, run "
                "`tap-whoop auth` again"
            )
        return body

    def _token_request(self, form: dict[str, str], member: str) -> requests.Response:
        form = {**form, "client_id": self.client_id, "client_secret": self.client_secret}
        for attempt in range(3):
            try:
                return self.session.post(self.token_url, data=form, timeout=OAUTH_TIMEOUT_SECONDS)
            except requests.exceptions.RequestException as exc:
                if _connection_never_made(exc):
                    if attempt < 2:
                        time.sleep(2**attempt)
                        continue
                    raise MemberError(
                        f"member {member!r}: cannot reach WHOOP's token endpoint "
                        f"{self.token_url} ({type(exc).__name__}); nothing was spent and the "
                        "stored token was kept, run again later"
                    ) from None
                raise _UnansweredError(
                    f"member {member!r}: WHOOP's token endpoint {self.token_url} did not answer "
                    f"({type(exc).__name__}); the stored token was kept, run again later (if WHOOP "
                    "had already rotated it, that run says so and re-authorizing is the fix)"
                ) from None
        raise AssertionError("unreachable")

    def _parse_token_response(
        self, response: requests.Response, member: str
    ) -> dict[str, t.Any] | None:
        """The JSON object WHOOP answered, or None; a rejected client is a config error."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return None
        if response.status_code == 401 and body.get("error") == "invalid_client":
            raise ConfigError(
                "WHOOP rejected client_id/client_secret (invalid_client); copy them again from "
                "the WHOOP developer dashboard"
            )
        return body


def describe_status(response: requests.Response) -> str:
    """`HTTP 400 invalid_grant`: the status and WHOOP's error code, never the body at large."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    shown = isinstance(error, str) and error.isidentifier() and len(error) <= 40
    return f"HTTP {response.status_code}" + (f" {error}" if shown else "")


def _text(body: t.Mapping[str, t.Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and value else None


def _lifetime(body: t.Mapping[str, t.Any], name: str = "expires_in") -> float:
    value = body.get(name)
    if _number(value) and 0 < value <= MAX_LIFETIME_SECONDS:
        return float(value)
    return float(DEFAULT_LIFETIME_SECONDS)


def _number(value: t.Any) -> t.TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _margin(lifetime: float) -> float:
    """Refresh this long before expiry: two minutes, or a tenth of a short-lived token's life."""
    return min(float(EXPIRY_MARGIN_SECONDS), lifetime / 10)


def _expiry(entry: t.Mapping[str, t.Any]) -> float:
    """The entry's expiry; one that cannot be true (infinite, NaN, days away) means "expired"."""
    value = entry.get("expires_at", 0)
    if not _number(value) or value > time.time() + MAX_LIFETIME_SECONDS:
        return 0.0
    return float(value)


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


IDENTITY_UNVERIFIED = "identity_unverified"
"""An entry's mark that its refresh token's lineage changed since its user id was learnt."""


def _seen_list(entry: t.Mapping[str, t.Any]) -> list[str]:
    seen = entry.get("seen")
    return [fp for fp in seen if isinstance(fp, str)] if isinstance(seen, list) else []


def _seen(entry: t.Mapping[str, t.Any], *tokens: str | None) -> list[str]:
    """Fingerprints of the tokens the entry has moved past: its list, its seed, and `tokens`."""
    seen = _seen_list(entry)
    for fp in (entry.get("seeded_from"), *(fingerprint(token) for token in tokens if token)):
        if isinstance(fp, str) and fp not in seen:
            seen.append(fp)
    return seen[-SEEN_TOKENS_KEPT:]


def _accounts_for(entry: t.Mapping[str, t.Any], configured: str) -> bool:
    """True when the store holds this configured token, or a token it was rotated into."""
    current = entry.get("refresh_token")
    return (
        entry.get("seeded_from") == configured
        or (isinstance(current, str) and fingerprint(current) == configured)
        or configured in _seen_list(entry)
    )


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
            configured = fingerprint(self._configured) if self._configured else None
            reseeded = configured is not None and not _accounts_for(entry, configured)
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
        interrupted = _in_flight(entry) == spending
        before = self._store.get(self.key)
        self._store.record(
            self.key, {**entry, "refreshing": {"token": spending, "since": _utc_now()}}
        )
        try:
            tokens = self._app.refresh(refresh_token, self.key, source, interrupted=interrupted)
        except _UnansweredError:
            raise
        except TapWhoopError:
            self._store.restore(self.key, before)
            raise
        access_token = _text(tokens, "access_token")
        updated = {
            **entry,
            "refresh_token": _text(tokens, "refresh_token") or refresh_token,
            "access_token": access_token,
            "expires_at": time.time() + _lifetime(tokens) if access_token else 0.0,
            "lifetime": _lifetime(tokens),
            "scope": _text(tokens, "scope") or entry.get("scope"),
            "seeded_from": configured or entry.get("seeded_from"),
            "seen": _seen(entry, entry.get("refresh_token"), refresh_token),
            "updated_at": _utc_now(),
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

    def identity_unverified(self, entry: t.Mapping[str, t.Any]) -> bool:
        """Whether the entry's WHOOP user id may not be this member's token's any more.

        So when the config's refresh token is new to the store (pasted, or copied from another
        store) or a refresh of one happened and no profile has been read since.
        """
        if entry.get(IDENTITY_UNVERIFIED):
            return True
        configured = fingerprint(self._configured) if self._configured else None
        return configured is not None and bool(entry) and not _accounts_for(entry, configured)

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
            and _expiry(entry) - _margin(_lifetime(entry, "lifetime")) > time.time()
        )

    def _adopt(self, entry: dict[str, t.Any]) -> None:
        self._access_token = entry["access_token"]
        self._expires_at = _expiry(entry)
        self._lifetime = _lifetime(entry, "lifetime")


def store_consent(
    store: TokenStorage, key: str, tokens: dict[str, t.Any], configured_refresh_token: str | None
) -> None:
    """Record a member's freshly consented tokens, replacing what the store had for them.

    The config's current refresh token (and the member's previous stored one) are marked as
    already seen, so that an old token left in the config does not override the newer consent.
    """
    refresh_token = _text(tokens, "refresh_token")
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
            "access_token": _text(tokens, "access_token"),
            "expires_at": time.time() + _lifetime(tokens),
            "lifetime": _lifetime(tokens),
            "scope": _text(tokens, "scope"),
            "seeded_from": (
                fingerprint(configured_refresh_token)
                if configured_refresh_token
                else previous.get("seeded_from")
            ),
            "seen": _seen(previous, previous.get("refresh_token"), configured_refresh_token),
            "updated_at": _utc_now(),
        }
        store.write(data)


def new_state() -> str:
    """The OAuth `state`: random, well over WHOOP's 8-character minimum."""
    return secrets.token_urlsafe(24)
