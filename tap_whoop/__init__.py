"""tap-whoop: a Singer tap for the WHOOP API v2."""

__version__ = "0.1.0"
