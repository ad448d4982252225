"""The sandbox CLI: `python -m whoop_sandbox` and the `tap-whoop-sandbox` command."""

from __future__ import annotations

import sys
from collections.abc import Sequence

NEEDS_FLASK = "tap-whoop-sandbox: error: the sandbox needs Flask: pip install 'tap-whoop[sandbox]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run `server.main`, or say in one line (exit 1) that Flask is missing."""
    try:
        from .server import main as serve
    except ModuleNotFoundError as exc:
        if exc.name not in {"flask", "werkzeug"}:
            raise
        print(NEEDS_FLASK, file=sys.stderr)
        return 1
    return serve(argv)


if __name__ == "__main__":
    raise SystemExit(main())
