"""A WHOOP-compatible API and OAuth server on loopback, with deterministic synthetic members.

Develop and test pipelines against it before WHOOP approves an app: `Sandbox` holds the data,
clock, grants and fault plan; `SandboxServer` serves it over real HTTP.

Choices where WHOOP leaves room: a collection's last page omits `next_token`; with both rate
budgets unlimited no X-RateLimit headers are sent; `stats()["rate_limited"]` counts every API
429, injected ones included; a refresh must send `scope` containing `offline`.

Flask is an optional extra (`pip install 'tap-whoop[sandbox]'`), so the names below are loaded on
first use: importing this package needs no Flask, and without it the `tap-whoop-sandbox` command
(`__main__.main`) says what to install instead of printing a traceback.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import ALL_SCOPES, READ_SCOPES, Sandbox, SandboxError, create_app
    from .server import SandboxServer, main

_SUBMODULE = {
    "ALL_SCOPES": "app",
    "READ_SCOPES": "app",
    "Sandbox": "app",
    "SandboxError": "app",
    "create_app": "app",
    "SandboxServer": "server",
    "main": "server",
}

__all__ = [
    "ALL_SCOPES",
    "READ_SCOPES",
    "Sandbox",
    "SandboxError",
    "SandboxServer",
    "create_app",
    "main",
]


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_SUBMODULE[name]}", __name__), name)
