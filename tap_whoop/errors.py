"""Errors a user can act on: what is wrong, and as data the command that fixes it.

The CLI renders an error as one line, with the fix as a command to paste for the way this
process was started (`Invocation`); nothing here is mutable module state.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

#: Where a message places its fix command, e.g. "re-authorize with `{fix}`".
FIX = "{fix}"


@dataclass(frozen=True)
class Fix:
    """A `tap-whoop` subcommand, with its arguments, that fixes a failure."""

    subcommand: str
    args: tuple[str, ...] = ()

    @classmethod
    def reauthorize(cls, member: str) -> Fix:
        """A new consent for `member`."""
        return cls("auth", ("--member", member))


@dataclass(frozen=True)
class Invocation:
    """How this process was started: under Meltano, or with these `--config` values."""

    config_files: tuple[str, ...] = ()
    meltano_environment: str | None = None
    meltano_plugin: str | None = None

    @classmethod
    def current(cls, config_files: tuple[str, ...] = ()) -> Invocation:
        """This process's: Meltano says so through its environment variables."""
        if os.environ.get("MELTANO_PROJECT_ROOT"):
            return cls(
                config_files,
                os.environ.get("MELTANO_ENVIRONMENT") or None,
                os.environ.get("MELTANO_EXTRACTOR_NAME") or "tap-whoop",
            )
        return cls(config_files)

    def command(self, fix: Fix) -> str:
        """`fix` as a command to paste: through Meltano, or with this process's config."""
        rest = " ".join(shlex.quote(arg) for arg in fix.args)
        if self.meltano_plugin:
            env = self.meltano_environment
            meltano = f"meltano --environment={shlex.quote(env)}" if env else "meltano"
            return f"{meltano} invoke {shlex.quote(self.meltano_plugin)} {fix.subcommand} {rest}"
        files = [value for value in self.config_files if value != "ENV"] or ["CONFIG"]
        configs = " ".join(f"--config {shlex.quote(value)}" for value in files)
        return f"tap-whoop {fix.subcommand} {configs} {rest}"


class TapWhoopError(Exception):
    """A failure whose message says what is wrong and how to fix it (never a secret).

    A message may name its fix with `{fix}`: rendered as the command for this invocation.
    """

    exit_code = 1

    def __init__(self, message: str, fix: Fix | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def render(self, invocation: Invocation | None = None) -> str:
        """The message, its fix spelled out for `invocation` (default: this process's)."""
        if self.fix is None:
            return self.message
        return self.message.replace(FIX, (invocation or Invocation.current()).command(self.fix))

    def __str__(self) -> str:
        return self.render()


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

    def __init__(self, member: str, path: str, scope: str, status: str) -> None:
        super().__init__(
            f"member {member!r}: WHOOP refused {path} ({status}): the authorization lacks "
            f"scope {scope!r} or was revoked; re-authorize with `{FIX}`",
            Fix.reauthorize(member),
        )
        self.path = path
        self.scope = scope
        self.status = status


class DeactivatedUserError(MemberError):
    """WHOOP answers 403 `deactivated_user`: the membership is inactive, not the consent wrong.

    Only the stream that asked fails (the sleep signals): re-authorizing would not help.
    """

    whole_member = False

    def __init__(self, member: str, path: str) -> None:
        super().__init__(
            f"member {member!r}: WHOOP refused {path} with 403 deactivated_user: the member's "
            "WHOOP membership is inactive; their sleep signals are set aside until it is active "
            "again (the other members and streams go on)"
        )
        self.path = path


class GatewayRefusedError(MissingScopeError):
    """An HTTP 403 whose page is not WHOOP's JSON: a CDN's, a gateway's or a proxy's.

    It fails what needs the endpoint, as WHOOP's 403 does, but says where to look first:
    re-authorizing does not lift a firewall's block.
    """

    def __init__(self, member: str, path: str, scope: str, kind: str, api_root: str) -> None:
        MemberError.__init__(
            self,
            f"member {member!r}: HTTP 403 for {path} with a page that is not WHOOP's JSON "
            f"({kind}): a CDN, gateway or proxy between the tap and {api_root} refused it; if "
            "that persists, check that proxy or firewall (and what User-Agent it blocks), "
            f"then the authorization (scope {scope!r}): `{FIX}`",
            Fix.reauthorize(member),
        )
        self.path = path
        self.scope = scope
        self.status = f"HTTP 403 {kind} page"


class BadDataError(MemberError):
    """WHOOP answered with a page or record the tap cannot trust: only that stream fails."""

    whole_member = False


class StreamUnavailableError(MemberError):
    """One member's endpoint kept failing after every retry: only that stream fails."""

    whole_member = False


class ReauthorizeError(MemberError):
    """WHOOP no longer accepts a member's tokens; only a new consent fixes it."""

    def __init__(self, member: str, reason: str) -> None:
        super().__init__(
            f"member {member!r}: {reason}; re-authorize with `{FIX}` (the token store was kept)",
            Fix.reauthorize(member),
        )
        self.member = member


class QuotaExhaustedError(TapWhoopError):
    """WHOOP's daily request quota for the app is spent; the run stops with nothing lost."""

    exit_code = 75


class StoppedError(TapWhoopError):
    """A signal stopped the run; its last STATE resumes where it stopped."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class MembersFailedError(TapWhoopError):
    """Some members could not be synced; the others' data and state were delivered."""
