"""`tap-whoop --test`: prove every member's credentials before a long job, in seconds.

The SDK's default test syncs a record per stream and stops at the first error. A WHOOP job fails
instead on a member's dead refresh token or a missing scope, so this check refreshes each member's
token (proving the refresh token alive, and storing its successor) and asks each selected stream
for its probe request (through the sync's own policy), then names every member, endpoint and
scope that failed.
"""

from __future__ import annotations

import typing as t

import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_whoop import clock, cost
from tap_whoop.errors import FIX, Fix, MemberError, MissingScopeError, TapWhoopError

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tap_whoop.run import Member, Run
    from tap_whoop.streams.base import WhoopStream


class CredentialCheckError(TapWhoopError):
    """At least one member cannot be synced as configured."""


def check_credentials(
    run: Run, profile: WhoopStream, streams: Sequence[WhoopStream], echo: Callable[[str], t.Any]
) -> None:
    """Check every member; report each on its own line, fail with one line naming the failures.

    `profile` is probed first (it names the member's WHOOP user); `streams` are the other
    selected streams, parents before their children.
    """
    failures: list[str] = []
    cost = sync_cost(profile, streams)
    for member in run.members:
        try:
            echo(f"{_check_member(member, profile, streams)}; {cost}")
        except MemberError as exc:
            failures.append(exc.render(run.invocation))
    if failures:
        raise CredentialCheckError(
            f"credential check failed for {len(failures)} of {len(run.members)} member(s): "
            + " | ".join(failures)
        )
    echo(f"tap-whoop: credentials OK for {len(run.members)} member(s)")


def _check_member(member: Member, profile: WhoopStream, streams: Sequence[WhoopStream]) -> str:
    member.auth.access_token(force_refresh=True)
    record = profile.probe({"member": member.key}, member.auth)
    if record is None:
        raise MemberError(f"member {member.key!r}: WHOOP answered no profile")
    context = {"user_id": record["user_id"]}
    found: dict[str, dict[str, t.Any] | None] = {profile.name: record}
    answered, skipped = [profile.name], []
    refused: list[MissingScopeError] = []
    trouble: list[str] = []
    for stream in streams:
        probe = stream.probe_context(context, found)
        if isinstance(probe, str):
            skipped.append(f"{stream.name} ({probe})")
            continue
        try:
            found[stream.name] = stream.probe(probe, member.auth)
        except MissingScopeError as exc:
            refused.append(exc)
        except (FatalAPIError, RetriableAPIError, requests.exceptions.RequestException) as exc:
            trouble.append(f"{stream.name} ({' '.join(str(exc).split())[:200]})")
        else:
            answered.append(stream.name)
    if refused:
        details = ", ".join(f"{e.path} ({e.status}, scope {e.scope})" for e in refused)
        scopes = ", ".join(sorted({e.scope for e in refused}))
        raise MemberError(
            f"member {member.key!r}: WHOOP refused {details}: the authorization lacks scope(s) "
            f"{scopes} or was revoked; re-authorize with `{FIX}`",
            Fix.reauthorize(member.key),
        )
    if trouble:
        raise MemberError(
            f"member {member.key!r}: WHOOP failed {', '.join(trouble)}: WHOOP is having trouble "
            "or the request is wrong; run the check again later"
        )
    name = " ".join(str(record.get(part) or "") for part in ("first_name", "last_name")).strip()
    line = (
        f"member {member.key!r}: OK, WHOOP user {record.get('user_id')}"
        f"{f' ({name})' if name else ''}; token refreshed; answered: {', '.join(answered)}"
    )
    return line + (f"; skipped: {', '.join(skipped)}" if skipped else "")


def sync_cost(profile: WhoopStream, streams: Sequence[WhoopStream]) -> str:
    """What a sync of the selected streams costs one member, in requests, from the streams.

    Each stream declares its cost for a window of days (`WhoopStream.estimated_requests`): one
    request for a profile or body measurement, a page per 25 typical records for a collection,
    one per cycle for an enabled per-cycle stream, one per sleep for enabled sleep signals, one
    per configured id for a by-id stream. A full sync's window runs from `start_date` (a year
    of history without one) to `end_date` or now; a daily incremental run's is
    `lookback_days` plus the day since the last run.
    """
    settings = profile.settings
    selected = [profile, *streams]

    def requests(days: float) -> int:
        return cost.window(selected, days)

    daily = cost.window(selected, settings.lookback_days + 1, new_days=1)
    if (start_date := settings.start_date) is not None:
        end = clock.now()
        if settings.end_date is not None:
            end = min(end, settings.end_date)
        days = max((end - start_date).total_seconds() / 86_400, 0)
        full = f"a full sync from start_date costs about {requests(days)} requests"
    else:
        full = f"a full sync costs about {requests(cost.YEAR)} requests per year of history"
    return f"{full}; a daily incremental run about {daily}"
