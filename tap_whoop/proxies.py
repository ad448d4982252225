"""The outbound proxy the environment names (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY).

requests honours those variables; this reads them once per session, and names the proxy in a
failure so that the line points at the proxy rather than at WHOOP or `api_url`.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import requests

#: requests' key for a proxy -> the variable a user sets for it.
_VARIABLES = {"http": "HTTP_PROXY", "https": "HTTPS_PROXY", "all": "ALL_PROXY"}


def with_environment_proxies(session: requests.Session, url: str) -> requests.Session:
    """`session` with the environment's proxy and CA bundle for `url` read once.

    requests scans the whole environment for proxy variables before every send; a run talks
    to one host for hours. HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY count as requests
    counts them, and REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) as its `Session.request` does.
    """
    if session.trust_env:
        session.proxies.update(requests.utils.get_environ_proxies(url))
        if session.verify is True:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            session.verify = bundle or True
        session.trust_env = False
    return session


def proxy_for(url: str) -> str | None:
    """The environment's proxy for `url` as a user would name it, or None when there is none.

    `the proxy HTTPS_PROXY names (proxy.corp:3128)`: the variable and the address only, never
    the credentials a proxy URL may carry.
    """
    proxies = requests.utils.get_environ_proxies(url)  # empty when NO_PROXY lists the host
    scheme = urlsplit(url).scheme
    for key in (scheme, "all"):
        if value := proxies.get(key):
            return f"the proxy {_VARIABLES.get(key, key.upper())} names{_address(value)}"
    return None


def via_proxy(exc: BaseException, url: str) -> str:
    """` through the proxy … names (…)` when the proxy, not WHOOP, is what failed; else ``.

    The proxy failed when it refused or dropped the request (ProxyError) or its URL is not one
    (InvalidURL, with a proxy set for `url`; `api_url` and `oauth_url` are checked before).
    """
    proxy = proxy_for(url) if url else None
    if isinstance(exc, requests.exceptions.InvalidProxyURL):
        return f" through {proxy or 'the proxy the environment names, which is not a URL'}"
    proxy_errors = (requests.exceptions.ProxyError, requests.exceptions.InvalidURL)
    return f" through {proxy}" if proxy and isinstance(exc, proxy_errors) else ""


def _address(value: str) -> str:
    try:
        parts = urlsplit(value if "://" in value else f"http://{value}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return ", which is not a URL"
    if not host or " " in value:
        return ", which is not a URL"
    return f" ({host}:{port})" if port else f" ({host})"
