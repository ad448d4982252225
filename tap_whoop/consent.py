"""A member's consent and its revocation: what `tap-whoop auth` and `revoke` do, minus the terminal.

WHOOP only redirects to https (or `whoop://`) URIs, which nothing on a member's machine serves, so
the usual way back is the member pasting the address the browser was sent to. `RedirectListener`
catches the redirect itself on loopback, for a redirect URI served locally (the sandbox, or an
https proxy in front of the port).
"""

from __future__ import annotations

import hmac
import os
import sys
import time
import typing as t
import webbrowser
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_whoop.errors import FIX, Fix, MemberError, ReauthorizeError, TapWhoopError
from tap_whoop.http import MemberClient
from tap_whoop.oauth.app import READ_SCOPES, describe_status
from tap_whoop.oauth.member import store_consent
from tap_whoop.proxies import via_proxy
from tap_whoop.settings import configured_members
from tap_whoop.streams.endpoints import ProfileStream

if t.TYPE_CHECKING:
    from tap_whoop.run import Run

DEFAULT_REDIRECT_URI = "https://localhost/whoop/callback"
CALLBACK_PATH = "/whoop/callback"
LISTEN_TIMEOUT_SECONDS = 300
_SHOWN_CHARS = 120
#: WHOOP's endpoint that revokes the app's access for the member whose token calls it.
REVOKE_PATH = "/v2/user/access"


class ConsentError(TapWhoopError):
    """The consent did not complete; nothing was stored."""


def configured_token(run: Run, member: str) -> str | None:
    """The refresh token the config gives `member`, if any."""
    return dict(configured_members(run.config)).get(member)


def member_client(run: Run, member: str) -> MemberClient:
    """Calls as `member`, under the policy of the streams."""
    return run.member_client(member)


def code_from_redirect(pasted: str, state: str, redirect_uri: str) -> str:
    """The authorization code in the address WHOOP redirected to, once its `state` is ours."""
    text = pasted.strip().strip("'\"<>")
    if not text:
        raise ConsentError(
            "nothing was pasted: paste the address your browser was sent to after allowing "
            f"access (it starts with {redirect_uri}); nothing was stored"
        )
    query = parse_qs(urlsplit(text).query, keep_blank_values=True)
    if not query.get("code") and not query.get("error"):
        raise ConsentError(
            "the pasted text is not the address WHOOP redirected to (it has no `code`): paste "
            f"the whole address from the browser's address bar, starting with {redirect_uri}; "
            "nothing was stored"
        )
    if any(len(query.get(name, [])) > 1 for name in ("code", "state", "error")):
        raise ConsentError(
            "the pasted address carries `code`, `state` or `error` twice; paste it exactly as "
            "the browser shows it; nothing was stored"
        )
    if not hmac.compare_digest(query.get("state", [""])[0].encode(), state.encode()):
        raise ConsentError(
            "the pasted address's `state` does not match this run's: it belongs to another "
            "`tap-whoop auth` run or did not come from WHOOP; nothing was stored, run "
            "`tap-whoop auth` again and paste the address that run leads to"
        )
    if query.get("error"):
        description = query.get("error_description", [""])[0]
        reason = _shown(query["error"][0]) + (f": {_shown(description)}" if description else "")
        raise ConsentError(
            f"WHOOP did not grant access ({reason}); nothing was stored; run `tap-whoop auth` "
            "again and allow access"
        )
    return query["code"][0]


def _shown(text: str) -> str:
    """Untrusted text from a URL, as one short printable line."""
    return "".join(c if c.isprintable() else "?" for c in text)[:_SHOWN_CHARS]


def open_browser(url: str) -> bool:
    """Best effort, and never where nobody would see it: CI, or Linux without a display."""
    if os.environ.get("CI"):
        return False
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False


class _CallbackServer(HTTPServer):
    callback_path: str
    received: str | None = None


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _CallbackServer

    def do_GET(self) -> None:
        """Take the redirect on the callback path; anything else (a favicon) is a 404."""
        if urlsplit(self.path).path != self.server.callback_path:
            self._answer(404, "This is not the tap-whoop callback.")
            return
        self.server.received = self.path
        self._answer(200, "tap-whoop received WHOOP's answer: close this tab, see the terminal.")

    def _answer(self, status: int, text: str) -> None:
        body = f"<!doctype html><title>tap-whoop</title><p>{text}</p>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: t.Any) -> None:
        """Silent: the request line carries the authorization code."""


class RedirectListener:
    """Catches the browser's redirect on 127.0.0.1 (stdlib `http.server`, one request at a time)."""

    def __init__(self, port: int, callback_path: str = CALLBACK_PATH) -> None:
        try:
            self._server = _CallbackServer(("127.0.0.1", port), _CallbackHandler)
        except OSError as exc:
            raise ConsentError(
                f"cannot listen on 127.0.0.1:{port}: {exc.strerror}; choose another --listen port"
            ) from None
        self._server.callback_path = callback_path or "/"
        self._server.timeout = 0.5

    @property
    def port(self) -> int:
        """The bound port (useful after asking for port 0)."""
        return int(self._server.server_address[1])

    @property
    def redirect_uri(self) -> str:
        """The loopback redirect URI this listener serves."""
        return f"http://127.0.0.1:{self.port}{self._server.callback_path}"

    def wait(self, timeout: float = LISTEN_TIMEOUT_SECONDS) -> str:
        """The path and query the browser was redirected to."""
        deadline = time.monotonic() + timeout
        while self._server.received is None:
            if time.monotonic() > deadline:
                raise ConsentError(
                    f"no redirect reached 127.0.0.1:{self.port} within {timeout:.0f}s; nothing "
                    "was stored, run `tap-whoop auth` again"
                )
            self._server.handle_request()
        return self._server.received

    def close(self) -> None:
        """Release the port."""
        self._server.server_close()


@dataclass
class Consent:
    """What a completed consent gave: whose it is, and what to tell the user."""

    member: str
    user_id: t.Any
    name: str
    refresh_token: str = field(repr=False)
    warnings: list[str] = field(default_factory=list)


def complete_consent(run: Run, member: str, code: str, redirect_uri: str) -> Consent:
    """Exchange the code, store the tokens, then confirm them by reading the member's profile."""
    store = run.token_store
    configured = configured_token(run, member)
    previous = store.read()["members"].get(member, {})
    store.prove_writable()
    tokens = run.app.exchange_code(code, redirect_uri, member)
    store_consent(store, member, tokens, configured, issuer=run.app.oauth_url)
    try:
        profile = member_client(run, member).get(ProfileStream.path, ProfileStream.scope)
    except MemberError as exc:
        raise TapWhoopError(
            f"member {member!r}: the tokens were saved to {store.path}, but WHOOP refused the "
            f"profile ({' '.join(exc.message.split())[:200]}); every stream needs read:profile: "
            "run `tap-whoop auth` again and allow all access"
        ) from None
    user_id = profile.get("user_id")
    store.update_member(member, user_id=user_id)
    warnings = []
    granted = set(str(tokens.get("scope") or " ".join(READ_SCOPES)).split())
    if missing := [scope for scope in READ_SCOPES if scope not in granted]:
        warnings.append(
            f"the consent lacks {', '.join(missing)}: streams needing it will fail for {member!r}"
        )
    if previous.get("user_id") not in (None, user_id):
        warnings.append(
            f"member {member!r} was WHOOP user {previous['user_id']} before and is now user "
            f"{user_id}: check that the right person signed in"
        )
    others = [
        key
        for key, entry in store.read()["members"].items()
        if key != member and entry.get("user_id") == user_id
    ]
    if others:
        warnings.append(
            f"WHOOP user {user_id} is also stored as member(s) {', '.join(map(repr, others))}; "
            "their records would be synced twice"
        )
    if member not in dict(configured_members(run.config)):
        warnings.append(
            f"member {member!r} is not in this config, so the tap will not sync it: add "
            f'{{"key": "{member}"}} to `users` (no refresh_token needed, the store has it)'
        )
    name = " ".join(str(profile.get(part) or "") for part in ("first_name", "last_name")).strip()
    return Consent(member, user_id, name, str(tokens["refresh_token"]), warnings)


def revoke_member(
    run: Run, member: str, *, local_only: bool = False, also_disconnect: bool = False
) -> str:
    """Revoke the member's authorization at WHOOP, then forget it; says what was done.

    WHOOP revokes per user: other keys authorized as the same WHOOP user lose their access too,
    so that is refused unless `also_disconnect` says the caller knows.
    """
    store = run.token_store
    stored = store.read()["members"]
    configured = configured_token(run, member)
    if member not in stored and (local_only or not configured):
        known = ", ".join(map(repr, sorted(stored))) or "none"
        raise TapWhoopError(
            f"member {member!r} is not in the token store {store.path} (members there: {known})"
        )
    listed = member in dict(configured_members(run.config)) and run.config.get("users")
    config_note = (
        "; remove its refresh_token from the config, or the next run reports it rejected"
        if configured
        else f"; remove {member!r} from `users`, or the next run stops asking for its token"
        if listed
        else ""
    )
    if local_only:
        store.remove_member(member)
        return (
            f"Removed member {member!r} from {store.path} without contacting WHOOP; the member "
            f"can remove the app in WHOOP's own settings{config_note}"
        )
    user_id = stored.get(member, {}).get("user_id")
    shared = sorted(
        key
        for key, entry in stored.items()
        if key != member and user_id is not None and entry.get("user_id") == user_id
    )
    if shared and not also_disconnect:
        raise TapWhoopError(
            f"member {member!r} is WHOOP user {user_id}, as are {', '.join(map(repr, shared))}: "
            "WHOOP revokes per user, so revoking it disconnects them too; nothing was revoked. "
            f"Run `{FIX}` to revoke all of them, or revoke with --local-only to forget only "
            f"{member!r} here",
            Fix("revoke", ("--member", member, "--also-disconnect-shared")),
        )
    try:
        member_client(run, member).delete(REVOKE_PATH)
    except ReauthorizeError:
        raise TapWhoopError(
            f"member {member!r}: WHOOP no longer accepts its tokens (already revoked, or "
            "replaced by a newer consent), so tap-whoop cannot revoke it; to drop it from the "
            f"token store run `{FIX}`",
            Fix("revoke", ("--member", member, "--local-only")),
        ) from None
    except (MemberError, FatalAPIError, RetriableAPIError, requests.RequestException) as exc:
        response = getattr(exc, "response", None)
        answer = (
            f"answered {describe_status(response)}"
            if isinstance(response, requests.Response)
            else f"did not answer{via_proxy(exc, run.api_url)} ({type(exc).__name__})"
        )
        raise TapWhoopError(
            f"member {member!r}: WHOOP {answer} to the revocation; the member was kept in the "
            f"token store, run `{FIX}` again later",
            Fix("revoke", ("--member", member)),
        ) from None
    store.remove_member(member)
    also = (
        f"; {', '.join(map(repr, shared))} (the same WHOOP user) lost access too and need "
        "`tap-whoop auth` again"
        if shared
        else ""
    )
    return (
        f"Revoked WHOOP access for member {member!r} and removed it from {store.path}"
        f"{config_note}{also}"
    )
