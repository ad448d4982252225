"""`tap-whoop --test`: prove every member's credentials before a long job, in seconds.

The SDK's default test syncs a record per stream and stops at the first error. A WHOOP job fails
instead on a member's dead refresh token or a missing scope, so this check refreshes each member's
token (proving the refresh token alive, and storing its successor) and asks each selected
endpoint for one record, then names every member, endpoint and scope that failed.
"""

from __future__ import annotations

import typing as t

import click

from tap_whoop.client import CollectionStream
from tap_whoop.errors import MemberError, TapWhoopError, reauthorize_command
from tap_whoop.member_api import PROFILE_PATH, MemberApi, describe_status
from tap_whoop.streams import ByIdStream, CycleChildStream, ProfileStream

if t.TYPE_CHECKING:
    from tap_whoop.auth import Member
    from tap_whoop.client import WhoopStream
    from tap_whoop.tap import TapWhoop


class CredentialCheckError(TapWhoopError):
    """At least one member cannot be synced as configured."""


def check_credentials(tap: TapWhoop, echo: t.Callable[[str], t.Any] = click.echo) -> None:
    """Check every member; report each on its own line, fail with one line naming the failures."""
    streams = [
        t.cast("WhoopStream", stream)
        for stream in tap.streams.values()
        if stream.selected and not isinstance(stream, ProfileStream)
    ]
    failures: list[str] = []
    members = list(tap.members)
    for member in members:
        try:
            echo(_check_member(tap, member, streams))
        except MemberError as exc:
            failures.append(str(exc))
    if failures:
        raise CredentialCheckError(
            f"credential check failed for {len(failures)} of {len(members)} member(s): "
            + " | ".join(failures)
        )
    echo(f"tap-whoop: credentials OK for {len(members)} member(s)")


def _check_member(tap: TapWhoop, member: Member, streams: list[WhoopStream]) -> str:
    api = MemberApi(tap.api_url, member.auth, pacer=tap.pacer)
    member.auth.access_token(force_refresh=True)
    response = api.get(PROFILE_PATH)
    if response.status_code != 200:
        raise _refused(member.key, [(PROFILE_PATH, "read:profile", response)])
    profile = response.json()
    answered = ["profile"]
    skipped: list[str] = []
    refused: list[tuple[str, str, t.Any]] = []
    cycle_ids: list[int] | None = None
    for stream in streams:
        if isinstance(stream, CycleChildStream):
            if cycle_ids is None:
                cycle_ids = _first_cycle(api)
            ids: list[t.Any] = cycle_ids
            path = stream.path.format(cycle_id=ids[0]) if ids else ""
            why_not = "no cycle yet"
        elif isinstance(stream, ByIdStream):
            ids = list(tap.config.get(stream.ids_setting) or [])
            path = stream.path.format(record_id=ids[0]) if ids else ""
            why_not = f"no {stream.ids_setting}"
        else:
            ids, path, why_not = [None], stream.path, ""
        if not ids:
            skipped.append(f"{stream.name} ({why_not})")
            continue
        params = {"limit": 1} if isinstance(stream, CollectionStream) else None
        response = api.get(path, params)
        if response.status_code == 200 or (response.status_code == 404 and stream.missing_is_empty):
            answered.append(stream.name)
        else:
            refused.append((path, stream.scope, response))
    if refused:
        raise _refused(member.key, refused)
    name = " ".join(str(profile.get(part) or "") for part in ("first_name", "last_name")).strip()
    line = (
        f"member {member.key!r}: OK, WHOOP user {profile.get('user_id')}"
        f"{f' ({name})' if name else ''}; token refreshed; answered: {', '.join(answered)}"
    )
    return line + (f"; skipped: {', '.join(skipped)}" if skipped else "")


def _first_cycle(api: MemberApi) -> list[int]:
    response = api.get("/v2/cycle", {"limit": 1})
    if response.status_code != 200:
        return []
    records = response.json().get("records") or []
    return [records[0]["id"]] if records else []


def _refused(member: str, refused: list[tuple[str, str, t.Any]]) -> MemberError:
    """One line for all of a member's refusals: which endpoint, which scope, what to do."""
    scopes = sorted({scope for _, scope, response in refused if response.status_code == 403})
    details = ", ".join(
        f"{path} ({describe_status(response)}, scope {scope})" for path, scope, response in refused
    )
    if scopes:
        advice = (
            f"the authorization lacks scope(s) {', '.join(scopes)} or was revoked; re-authorize "
            f"with `{reauthorize_command(member)}`"
        )
    else:
        advice = "WHOOP is having trouble or the request is wrong; run the check again later"
    return MemberError(f"member {member!r}: WHOOP refused {details}: {advice}")
