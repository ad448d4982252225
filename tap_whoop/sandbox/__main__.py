"""`python -m tap_whoop.sandbox` runs the sandbox CLI."""

from .server import main

if __name__ == "__main__":
    raise SystemExit(main())
