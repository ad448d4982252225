"""The `tap-whoop` command: the Singer tap, plus `auth` and `revoke` for members' consent."""

from __future__ import annotations

import sys

import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_whoop.errors import TapWhoopError
from tap_whoop.tap import TapWhoop


def main(argv: list[str] | None = None) -> None:
    """Run the tap; user mistakes and WHOOP refusals end in one line and a non-zero exit."""
    args = sys.argv[1:] if argv is None else argv
    try:
        TapWhoop.cli.main(args=args, prog_name="tap-whoop", standalone_mode=True)
    except TapWhoopError as exc:
        _fail(str(exc), exc.exit_code)
    except FatalAPIError as exc:
        _fail(f"WHOOP refused a request: {exc}", 1)
    except RetriableAPIError as exc:
        _fail(f"WHOOP kept failing, gave up after retries: {exc}", 1)
    except requests.exceptions.RequestException as exc:
        _fail(f"cannot reach WHOOP ({type(exc).__name__}), gave up after retries", 1)


def _fail(message: str, code: int) -> None:
    print(f"tap-whoop: error: {message}", file=sys.stderr)
    sys.exit(code)
