"""tap-whoop: a Singer tap for the WHOOP API v2."""

__version__ = "0.1.0"

USER_AGENT = f"tap-whoop/{__version__} (+https://pypi.org/project/tap-whoop/)"
"""Every request's User-Agent: WHOOP's CDN may refuse Python's default agents."""
