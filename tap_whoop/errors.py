"""Errors a user can act on: the CLI prints their message as one line, without a traceback."""

from __future__ import annotations


class TapWhoopError(Exception):
    """A failure whose message says what is wrong and how to fix it (never a secret)."""

    exit_code = 1


class ConfigError(TapWhoopError):
    """A setting is missing or wrong; nothing was requested yet."""

    exit_code = 2


class TokenStoreError(TapWhoopError):
    """The token store cannot be read or written; it is left exactly as it was."""


class MemberError(TapWhoopError):
    """One member cannot be synced (revoked, missing scope); the other members go on."""


class ReauthorizeError(MemberError):
    """WHOOP no longer accepts a member's tokens; only a new consent fixes it."""

    def __init__(self, member: str, reason: str) -> None:
        super().__init__(
            f"member {member!r}: {reason}; re-authorize with "
            f"`tap-whoop auth --config CONFIG --member {member}` (the token store was kept)"
        )
        self.member = member


class QuotaExhaustedError(TapWhoopError):
    """WHOOP's daily request quota for the app is spent; the run stops with nothing lost."""

    exit_code = 75


class MembersFailedError(TapWhoopError):
    """Some members could not be synced; the others' data and state were delivered."""
