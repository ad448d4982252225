"""Errors a user can act on: the CLI prints their message as one line, without a traceback."""

from __future__ import annotations

import os
import shlex

_config_args: tuple[str, ...] = ()


def remember_config_args(values: list[str]) -> None:
    """Note the `--config` values this process was started with, for exact re-run commands."""
    global _config_args
    _config_args = tuple(values)


def command(subcommand: str, *args: str) -> str:
    """A `tap-whoop` subcommand as this process was run: through Meltano, or with its config."""
    rest = " ".join(shlex.quote(arg) for arg in args)
    if os.environ.get("MELTANO_PROJECT_ROOT"):
        environment = os.environ.get("MELTANO_ENVIRONMENT")
        meltano = f"meltano --environment={shlex.quote(environment)}" if environment else "meltano"
        plugin = shlex.quote(os.environ.get("MELTANO_EXTRACTOR_NAME") or "tap-whoop")
        return f"{meltano} invoke {plugin} {subcommand} {rest}"
    configs = " ".join(f"--config {shlex.quote(value)}" for value in _config_args)
    return f"tap-whoop {subcommand} {configs or '--config CONFIG'} {rest}"


def reauthorize_command(member: str) -> str:
    """The command that gives `member` a new consent."""
    return command("auth", "--member", member)


class TapWhoopError(Exception):
    """A failure whose message says what is wrong and how to fix it (never a secret)."""

    exit_code = 1


class ConfigError(TapWhoopError):
    """A setting is missing or wrong; nothing was requested yet."""

    exit_code = 2


class TokenStoreError(TapWhoopError):
    """The token store cannot be read or written; it is left exactly as it was."""


class MemberError(TapWhoopError):
    """One member cannot be synced (revoked, unreachable tokens); the other members go on."""

    #: False when only the stream that met it is affected; the member's other streams go on.
    whole_member = True


class MissingScopeError(MemberError):
    """WHOOP refuses one endpoint to a member (HTTP 403): only the streams needing it fail."""

    whole_member = False


class ReauthorizeError(MemberError):
    """WHOOP no longer accepts a member's tokens; only a new consent fixes it."""

    def __init__(self, member: str, reason: str) -> None:
        super().__init__(
            f"member {member!r}: {reason}; re-authorize with "
            f"`{reauthorize_command(member)}` (the token store was kept)"
        )
        self.member = member


class QuotaExhaustedError(TapWhoopError):
    """WHOOP's daily request quota for the app is spent; the run stops with nothing lost."""

    exit_code = 75


class MembersFailedError(TapWhoopError):
    """Some members could not be synced; the others' data and state were delivered."""
