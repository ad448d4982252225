"""WHOOP API calls as one member outside a sync: auth's confirmation, revoke, the `--test` check."""

from __future__ import annotations

import time
import typing as t

import requests

from tap_whoop.auth import describe_status
from tap_whoop.errors import ReauthorizeError, TapWhoopError

__all__ = ["MemberApi", "describe_status"]

if t.TYPE_CHECKING:
    from tap_whoop.auth import MemberAuth
    from tap_whoop.client import AppPacer

API_TIMEOUT_SECONDS = 30
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
GET_ATTEMPTS = 3
RETRY_WAIT_SECONDS = 1.0
PROFILE_PATH = "/v2/user/profile/basic"
REVOKE_PATH = "/v2/user/access"


class MemberApi:
    """Requests as one member: a 401 gets one refresh, a GET rides out brief WHOOP trouble.

    Only GETs are resent after a failure: a DELETE that reached WHOOP may have done its work.
    """

    def __init__(
        self,
        api_url: str,
        auth: MemberAuth,
        session: requests.Session | None = None,
        pacer: AppPacer | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.auth = auth
        self.session = session or requests.Session()
        self.pacer = pacer

    def get(self, path: str, params: dict[str, t.Any] | None = None) -> requests.Response:
        """GET `path`; the response of the last attempt, whatever its status."""
        response = self._send("GET", path, params)
        for attempt in range(1, GET_ATTEMPTS):
            if response.status_code not in TRANSIENT_STATUSES:
                break
            if response.status_code != 429:
                time.sleep(RETRY_WAIT_SECONDS * attempt)
            response = self._send("GET", path, params)
        return response

    def delete(self, path: str) -> requests.Response:
        """DELETE `path`, sent once (plus once more after a stale-token 401)."""
        return self._send("DELETE", path, None)

    def _send(self, method: str, path: str, params: dict[str, t.Any] | None) -> requests.Response:
        key = self.auth.key
        for _ in range(2):
            token = self.auth.access_token()
            if self.pacer is not None:
                self.pacer.wait()
            try:
                response = self.session.request(
                    method,
                    f"{self.api_url}{path}",
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=API_TIMEOUT_SECONDS,
                )
            except requests.exceptions.RequestException as exc:
                raise TapWhoopError(
                    f"member {key!r}: cannot reach WHOOP's API at {self.api_url} "
                    f"({type(exc).__name__}); check api_url and the network, then run again"
                ) from None
            if self.pacer is not None:
                self.pacer.observe(response)
            if response.status_code != 401:
                return response
            if not self.auth.reject(token):
                break
        raise ReauthorizeError(
            key, f"WHOOP rejected the member's access token for {path} (HTTP 401)"
        )
