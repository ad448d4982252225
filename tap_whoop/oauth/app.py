"""The registered WHOOP app and its OAuth token endpoint."""

from __future__ import annotations

import math
import secrets
import time
import typing as t
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import requests
import urllib3

from tap_whoop.deadline import with_deadlines
from tap_whoop.errors import (
    ConfigError,
    MemberError,
    ReauthorizeError,
    TapWhoopError,
)
from tap_whoop.proxies import via_proxy
from tap_whoop.settings import DEFAULT_OAUTH_URL

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
OAUTH_TIMEOUT_SECONDS = 30
DEFAULT_LIFETIME_SECONDS = 3600
MAX_LIFETIME_SECONDS = 7 * 24 * 3600


class UnansweredError(MemberError):
    """The token request may have reached WHOOP and rotated the token: its answer is unknown."""


def _connection_never_made(exc: requests.exceptions.RequestException) -> bool:
    """True when the request surely never reached WHOOP, so resending cannot spend a token."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.InvalidURL)):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, urllib3.exceptions.ProxyError):  # the proxy's own connection
        reason = reason.original_error
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
        if response.status_code != 200 or body is None or not text_field(body, "access_token"):
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
                via = via_proxy(exc, self.token_url)
                host = urlsplit(self.token_url).hostname
                again = (
                    f"check that proxy setting (or list {host} in NO_PROXY) and run again"
                    if via
                    else "run again later"
                )
                if _connection_never_made(exc):
                    if attempt < 2 and not isinstance(exc, requests.exceptions.InvalidURL):
                        time.sleep(2**attempt)
                        continue
                    raise MemberError(
                        f"member {member!r}: cannot reach WHOOP's token endpoint "
                        f"{self.token_url}{via} ({type(exc).__name__}); nothing was spent and the "
                        f"stored token was kept, {again}"
                    ) from None
                raise UnansweredError(
                    f"member {member!r}: WHOOP's token endpoint {self.token_url} did not answer"
                    f"{via} ({type(exc).__name__}); the stored token was kept, {again} (if WHOOP "
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


def text_field(body: t.Mapping[str, t.Any], name: str) -> str | None:
    """A token response's (or an entry's) non-empty text field, else None."""
    value = body.get(name)
    return value if isinstance(value, str) and value else None


def lifetime_of(body: t.Mapping[str, t.Any], name: str = "expires_in") -> float:
    """A token's lifetime in seconds; one that cannot be true is the default lifetime."""
    value = body.get(name)
    if is_number(value) and 0 < value <= MAX_LIFETIME_SECONDS:
        return float(value)
    return float(DEFAULT_LIFETIME_SECONDS)


def is_number(value: t.Any) -> t.TypeGuard[float]:
    """A finite JSON number (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def new_state() -> str:
    """The OAuth `state`: random, well over WHOOP's 8-character minimum."""
    return secrets.token_urlsafe(24)
