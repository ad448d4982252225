"""A WHOOP-compatible API and OAuth server on loopback, with deterministic synthetic members.

Develop and test pipelines against it before WHOOP approves an app: `Sandbox` holds the data,
clock, grants and fault plan; `SandboxServer` serves it over real HTTP.

Choices where WHOOP leaves room: a collection's last page omits `next_token`; with both rate
budgets unlimited no X-RateLimit headers are sent; `stats()["rate_limited"]` counts every API
429, injected ones included; a refresh must send `scope` containing `offline`.
"""

from .app import ALL_SCOPES, READ_SCOPES, Sandbox, SandboxError, create_app
from .server import SandboxServer, main

__all__ = [
    "ALL_SCOPES",
    "READ_SCOPES",
    "Sandbox",
    "SandboxError",
    "SandboxServer",
    "create_app",
    "main",
]
