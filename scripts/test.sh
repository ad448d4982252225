#!/usr/bin/env bash
# The whole test suite, as CI runs it: bootstrap (venvs + Meltano plugins), a local PostgreSQL
# (scripts/postgres.sh; needs root or sudo, installs it with apt when missing), then pytest.
# Exit code = pytest's. Arguments go to pytest, e.g. `bash scripts/test.sh -m "not e2e" -x`.
#
# Env: TAP_WHOOP_TEST_POSTGRES_URL to use another server instead of scripts/postgres.sh's
# (postgresql://USER:PASSWORD@HOST:PORT/DATABASE; the user needs CREATE on the database).
# TEST_CLOCK_OFFSET_DAYS, e.g. 60: the wall clock of pytest and of every Python process it starts
# moved that many days ahead (tests/clock_offset/sitecustomize.py), to prove that no test
# depends on today's date.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export MELTANO_CLI_DISABLE_VERSION_CHECK=1

bash scripts/bootstrap.sh || { echo "test.sh: bootstrap failed" >&2; exit 1; }

if [ -z "${TAP_WHOOP_TEST_POSTGRES_URL:-}" ]; then
  url="$(bash scripts/postgres.sh)" || { echo "test.sh: scripts/postgres.sh failed" >&2; exit 1; }
  export TAP_WHOOP_TEST_POSTGRES_URL="$url"
fi
echo "test.sh: PostgreSQL for the E2E tests: ${TAP_WHOOP_TEST_POSTGRES_URL%%:*}://…@${TAP_WHOOP_TEST_POSTGRES_URL##*@}" >&2

if [ -n "${TEST_CLOCK_OFFSET_DAYS:-}" ]; then
  export TEST_CLOCK_OFFSET_DAYS
  export PYTHONPATH="$ROOT/tests/clock_offset${PYTHONPATH:+:$PYTHONPATH}"
  echo "test.sh: every Python process's wall clock moved $TEST_CLOCK_OFFSET_DAYS day(s) ahead:" \
    "$(.venv/bin/python -c 'import datetime; print(datetime.datetime.now(datetime.timezone.utc))')" >&2
fi

.venv/bin/python -m pytest "$@"
