"""`python -m tap_whoop` is the `tap-whoop` command."""

from tap_whoop.cli import main

main()
