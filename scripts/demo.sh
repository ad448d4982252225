#!/usr/bin/env bash
# The whole pipeline on fake data, no WHOOP account needed:
#   WHOOP sandbox (tap-whoop-sandbox) -> tap-whoop -> Meltano -> DuckDB (output/whoop_sandbox.duckdb)
#   -> dbt (transform/, schema `analytics` of the same file)
# then a summary from the `whoop_daily` model and a chart, output/whoop_report.html. Works on a
# fresh clone with only Python 3 (it runs scripts/bootstrap.sh first). Run it again for an incremental run: each further run moves the
# sandbox clock a day forward first, so there is a new day (and finished scores) to load.
#
# Keeps its state under .meltano/ (sandbox clock and tokens in .meltano/tap-whoop-sandbox/,
# Meltano's bookmarks in .meltano/meltano.db). To start over:
#   rm -rf .meltano/tap-whoop-sandbox output/whoop_sandbox.duckdb
#   .venv/bin/meltano --environment=sandbox state clear --force sandbox:tap-whoop-to-target-duckdb
#
# Env: DEMO_HISTORY_DAYS (days of history the sandbox serves, default 90), DEMO_ADVANCE_DAYS
# (default 1; how far the clock moves before each run after the first, 0 for not at all).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export MELTANO_CLI_DISABLE_VERSION_CHECK=1

bash scripts/bootstrap.sh

SANDBOX_DIR=".meltano/tap-whoop-sandbox"
SANDBOX_STATE="$SANDBOX_DIR/sandbox.json"        # clock offset + live grants of the sandbox
TOKENS="$SANDBOX_DIR/tokens.json"                # the tap's token store in the sandbox env
LOG_DIR=".meltano/logs/demo"
mkdir -p "$SANDBOX_DIR" "$LOG_DIR" output

# The sandbox's grants and the tap's token store only make sense together.
if { [ -f "$SANDBOX_STATE" ] && [ ! -f "$TOKENS" ]; } || { [ ! -f "$SANDBOX_STATE" ] && [ -f "$TOKENS" ]; }; then
  echo "demo: sandbox state and token store out of step; starting the sandbox's grants afresh" >&2
  rm -f "$SANDBOX_STATE" "$TOKENS"
fi
first_run=1
[ -f "$SANDBOX_STATE" ] && first_run=0

# 1. Start the sandbox on a free port; stop it however this script ends.
SANDBOX_LOG="$LOG_DIR/sandbox.log"
.venv/bin/tap-whoop-sandbox --port 0 --members alice \
  --history-days "${DEMO_HISTORY_DAYS:-90}" --state-file "$SANDBOX_STATE" --quiet \
  >"$SANDBOX_LOG" 2>&1 &
SANDBOX_PID=$!
stop_sandbox() {
  kill "$SANDBOX_PID" 2>/dev/null || true
  wait "$SANDBOX_PID" 2>/dev/null || true
}
trap stop_sandbox EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

api_url=""
for _ in $(seq 1 100); do
  api_url="$(grep -o 'api_url=[^ ]*' "$SANDBOX_LOG" 2>/dev/null | head -n1 | cut -d= -f2- || true)"
  [ -n "$api_url" ] && break
  kill -0 "$SANDBOX_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$api_url" ]; then
  echo "demo: the sandbox did not start:" >&2
  cat "$SANDBOX_LOG" >&2
  exit 1
fi
base_url="${api_url%/developer}"
export TAP_WHOOP_API_URL="$api_url"
export TAP_WHOOP_OAUTH_URL="$base_url/oauth/oauth2"

admin() {  # admin METHOD PATH [JSON]: the sandbox's /_sandbox admin API
  .venv/bin/python - "$base_url/_sandbox/$2" "$1" "${3:-}" <<'PY'
import sys, urllib.request
url, method, body = sys.argv[1:4]
request = urllib.request.Request(url, data=body.encode() or None, method=method,
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=10) as response:
    print(response.read().decode())
PY
}

if [ "$first_run" = 0 ] && [ "${DEMO_ADVANCE_DAYS:-1}" != 0 ]; then
  clock="$(admin POST advance "{\"days\": ${DEMO_ADVANCE_DAYS:-1}}")"
  echo "demo: sandbox clock moved ${DEMO_ADVANCE_DAYS:-1} day(s) forward: $clock"
fi
echo "demo: sandbox at $base_url ($(admin GET clock))"

# 2. The pipeline, then the models. Meltano's log goes to a file; its tail is shown if it fails.
RUN_LOG="$LOG_DIR/meltano-run.log"
echo "demo: meltano --environment=sandbox run tap-whoop target-duckdb dbt-duckdb:build   (log: $RUN_LOG)"
started=$SECONDS
since="$(date -u +%Y-%m-%dT%H:%M:%S)"
if ! .venv-meltano/bin/meltano --environment=sandbox run tap-whoop target-duckdb dbt-duckdb:build \
    >"$RUN_LOG" 2>&1; then
  echo "demo: the pipeline failed; last lines of $RUN_LOG:" >&2
  grep -v 'METRIC' "$RUN_LOG" | tail -n 25 >&2
  exit 1
fi
requests="$(admin GET stats | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["requests"])')"
kind="full sync"
[ "$first_run" = 0 ] && kind="incremental run"
built="$(grep -o 'Done\. PASS=[0-9]* WARN=[0-9]* ERROR=[0-9]*' "$RUN_LOG" | tail -n1 || true)"
echo "demo: $kind and dbt build done in $((SECONDS - started))s with $requests WHOOP API requests" \
  "(dbt: ${built:-no summary})"
echo

# 3. What was loaded, and what the models made of it.
.venv/bin/python scripts/report.py output/whoop_sandbox.duckdb --since "$since" \
  --chart output/whoop_report.html
