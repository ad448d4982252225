"""The token store as one JSON file (the default): private, locked, written durably."""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import logging
import os
import re
import stat
import tempfile
import typing as t
from pathlib import Path

import platformdirs
from filelock import FileLock, Timeout

from tap_whoop.errors import (
    TokenStoreError,
)
from tap_whoop.stores.tokens import LOCK_TIMEOUT_SECONDS, MemberEdits, descends, utc_now

if t.TYPE_CHECKING:
    from collections.abc import Iterator

PROOF_SLACK_BYTES = 8192
logger = logging.getLogger("tap-whoop.auth")


def default_token_store_path() -> Path:
    """Inside a Meltano project (whose `.meltano/` is never committed), else the user data dir."""
    if project_root := os.environ.get("MELTANO_PROJECT_ROOT"):
        return Path(project_root) / ".meltano" / "tap-whoop" / "tokens.json"
    return platformdirs.user_data_path("tap-whoop") / "tokens.json"


class _NotAStoreError(TokenStoreError):
    """The store file holds something other than a token store (torn, edited, foreign)."""


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
        #: member -> (the entry object, its JSON) as this process last wrote it
        self._encoded: dict[str, tuple[t.Any, str]] = {}

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
            data["moved_at"] = utc_now()
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
        self._commit(self._encode(data), slack=slack)
        self._cached, self._cached_stamp = data, self._stamp()

    def _encode(self, data: dict[str, t.Any]) -> bytes:
        """`_dump(data)`, byte for byte, encoding only the entries that changed since the last.

        One file holds every member, so each refresh writes them all; an entry this process
        encoded before (the same object: entries are replaced, never changed in place) is
        reused, which keeps a refresh's cost flat with the number of members.
        """
        members = data.get("members")
        if not isinstance(members, dict):
            return _dump(data)
        encoded: dict[str, tuple[t.Any, str]] = {}
        for key, entry in members.items():
            known = self._encoded.get(key)
            if known is None or known[0] is not entry:
                known = (entry, f"{json.dumps(key)}: {json.dumps(entry, sort_keys=True)}")
            encoded[key] = known
        self._encoded = encoded
        parts = {
            name: json.dumps(value, sort_keys=True)
            for name, value in data.items()
            if name != "members"
        }
        parts["members"] = "{" + ", ".join(encoded[key][1] for key in sorted(encoded)) + "}"
        return (
            "{" + ", ".join(f"{json.dumps(name)}: {parts[name]}" for name in sorted(parts)) + "}"
        ).encode()

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
                if key in members and descends(entry, members[key]):
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
