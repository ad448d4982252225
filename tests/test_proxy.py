"""A proxy in the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) carries the tap's WHOOP
requests, as requests honours those variables; the tap only reads them once per run."""

from __future__ import annotations

import http.client
import re
import socket
import threading
import typing as t
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests

from tap_whoop.proxies import proxy_for, with_environment_proxies
from tests.auth_support import cli_env, run_cli, write_json
from tests.conftest import run_tap, tap_config

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from whoop_sandbox import Sandbox

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "host"}


class ForwardProxy(ThreadingHTTPServer):
    """A plain HTTP forward proxy on loopback that counts the requests it carried, by path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        self.carried: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Relay(BaseHTTPRequestHandler):
    server: ForwardProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: t.Any) -> None:
        pass

    def _relay(self) -> None:
        target = urlsplit(self.path)  # a proxy is sent the absolute URL
        self.server.carried.append(target.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            connection.request(self.command, path, body=body or None, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
        finally:
            connection.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _relay


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _clear_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_every_whoop_request_goes_through_the_proxy_the_environment_names(
    sandbox: Sandbox, tmp_path: Path, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear_proxy_environment(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    sandbox.reset_stats()

    result = run_tap(tap_config(sandbox, tmp_path))

    assert result.error is None
    assert result.records("cycles")
    api = [path for path in proxy.carried if "/v2/" in path]
    assert len(api) == sum(sandbox.stats()["by_path"].values()), "every API request"
    assert {path.rsplit("/v2/", 1)[1] for path in api} >= {"user/profile/basic", "cycle"}
    assert any(path.endswith("/token") for path in proxy.carried), "the token refresh too"


def test_no_proxy_keeps_the_tap_off_the_proxy(
    sandbox: Sandbox, tmp_path: Path, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear_proxy_environment(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    result = run_tap(tap_config(sandbox, tmp_path))

    assert result.error is None
    assert result.records("cycles")
    assert proxy.carried == []


def test_the_ca_bundle_the_environment_names_is_used_and_read_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clear_proxy_environment(monkeypatch)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/proxy-ca.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = with_environment_proxies(requests.Session(), "https://api.prod.whoop.com/developer")

    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere.example:3128")  # read once: no effect
    again = with_environment_proxies(session, "https://api.prod.whoop.com/developer")

    assert again is session
    assert session.verify == "/etc/proxy-ca.pem"
    assert session.proxies["https"] == "http://proxy.example:3128"
    assert session.trust_env is False


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_proxy_that_refuses_is_named_and_the_stored_token_is_kept(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear_proxy_environment(monkeypatch)
    port = _closed_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://proxyuser:pr0xy-s3cret@127.0.0.1:{port}")
    config = tap_config(sandbox, tmp_path)
    sandbox.reset_stats()

    result = run_tap(config)

    line = str(result.error)
    assert f"through the proxy HTTP_PROXY names (127.0.0.1:{port}) (ProxyError)" in line
    assert "nothing was spent and the stored token was kept" in line
    assert f"list {urlsplit(config['oauth_url']).hostname} in NO_PROXY" in line
    assert "pr0xy-s3cret" not in line
    assert "proxyuser" not in line
    assert sandbox.stats()["by_path"] == {}, "nothing reached WHOOP"


def test_a_run_whose_proxy_refuses_ends_in_one_line_naming_the_proxy(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    settings = tap_config(sandbox, tmp_path, max_request_attempts=2)
    config = write_json(tmp_path / "config.json", settings)
    assert run_cli("--config", str(config)).returncode == 0  # a fresh access token is stored
    port = _closed_port()
    env = cli_env(HTTP_PROXY=f"http://proxyuser:pr0xy-s3cret@127.0.0.1:{port}")
    env = {k: v for k, v in env.items() if k.upper() not in ("NO_PROXY", "ALL_PROXY")}
    api = urlsplit(sandbox.server.api_url)  # type: ignore[attr-defined]

    done = run_cli("--config", str(config), env=env)

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "pr0xy-s3cret" not in done.stderr + done.stdout
    line = done.stderr.strip().splitlines()[-1]
    assert line == (
        f"tap-whoop: error: cannot reach WHOOP at {api.netloc} through the proxy HTTP_PROXY names "
        f"(127.0.0.1:{port}) (ProxyError): check that proxy setting, or list {api.hostname} in "
        "NO_PROXY to reach WHOOP directly"
    )


@pytest.mark.parametrize("value", ["not a url at all", "http://"])
def test_a_proxy_variable_that_is_not_a_url_is_named_as_such(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    _clear_proxy_environment(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", value)
    sandbox.reset_stats()

    result = run_tap(tap_config(sandbox, tmp_path))

    line = str(result.error)
    assert re.search(
        r"through the proxy HTTP_PROXY names, which is not a URL \(Invalid\w*URL\)", line
    )
    assert "nothing was spent and the stored token was kept" in line
    assert sandbox.stats()["by_path"] == {}, "nothing reached WHOOP"


@pytest.mark.parametrize(
    ("environment", "url", "named"),
    [
        (
            {"HTTPS_PROXY": "http://u:secret@proxy.corp:3128"},
            "https://api.prod.whoop.com/x",
            "the proxy HTTPS_PROXY names (proxy.corp:3128)",
        ),
        (
            {"HTTP_PROXY": "proxy.corp:8080"},
            "http://127.0.0.1:9/x",
            "the proxy HTTP_PROXY names (proxy.corp:8080)",
        ),
        (
            {"ALL_PROXY": "socks5://proxy.corp:1080"},
            "https://api.prod.whoop.com/x",
            "the proxy ALL_PROXY names (proxy.corp:1080)",
        ),
        (
            {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "api.prod.whoop.com"},
            "https://api.prod.whoop.com/x",
            None,
        ),
        ({}, "https://api.prod.whoop.com/x", None),
    ],
)
def test_the_proxy_is_named_by_its_variable_and_address_never_its_credentials(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str, named: str | None
) -> None:
    _clear_proxy_environment(monkeypatch)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    assert proxy_for(url) == named
