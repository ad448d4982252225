#!/usr/bin/env bash
# Set up everything the demo, the tests and CI need, from a fresh clone with only Python 3:
#   .venv          the tap with its [dev] extras (pytest, ruff, mypy, psycopg, duckdb), editable
#   .venv-meltano  Meltano, pinned, in its own venv (see below)
#   .meltano/      the Meltano plugins of meltano.yml (`meltano install`: tap-whoop from this
#                  checkout, target-postgres, target-duckdb, and dbt for the models in
#                  transform/ as dbt-duckdb and dbt-postgres), each in its own venv
# Idempotent and quick when nothing changed: each step is skipped while the files it depends on
# (pyproject.toml, meltano.yml, this script) are unchanged.
#
# Why Meltano has its own venv: it installs cleanly beside the tap, but pins SQLAlchemy < 2.1 and
# brings ~25 packages of its own, so the tap would be tested against a different set of
# dependencies than `pip install tap-whoop` gives its users. Meltano never imports the tap
# anyway: it runs it from .meltano/extractors/tap-whoop/venv.
#
# Env: PYTHON (default python3, >= 3.10), BOOTSTRAP_FORCE=1 to redo every step.
# After it: `source .venv/bin/activate` puts tap-whoop, tap-whoop-sandbox, pytest and meltano
# (a link into .venv-meltano) on PATH.
set -euo pipefail

MELTANO_VERSION="4.4.1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
export MELTANO_CLI_DISABLE_VERSION_CHECK=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "bootstrap: $*" >&2; }

# uv (used below and by `meltano install`) trusts only its own CA roots unless told otherwise;
# use the system's bundle, as pip does, so that machines with their own CA (proxies) work.
if [ -z "${SSL_CERT_FILE:-}" ]; then
  for bundle in "${PIP_CERT:-}" /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [ -n "$bundle" ] && [ -f "$bundle" ]; then export SSL_CERT_FILE="$bundle"; break; fi
  done
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  log "need Python >= 3.10 as \$PYTHON (got: $("$PYTHON" --version 2>&1 || echo "no $PYTHON"))"
  exit 1
fi

# One bootstrap at a time (test.sh and demo.sh may start together).
mkdir -p .meltano
exec 9>".meltano/.bootstrap.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

fingerprint() { cat "$@" | "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'; }
py_version="$("$PYTHON" -c 'import sys; print(sys.version)')"
up_to_date() {  # up_to_date STAMPFILE FINGERPRINT
  [ "${BOOTSTRAP_FORCE:-0}" != 1 ] && [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}

# 1. Meltano, in .venv-meltano (it ships uv, which the next steps use).
stamp=".venv-meltano/.bootstrap-stamp"
# [postgres]: Meltano's own state in PostgreSQL (MELTANO_DATABASE_URI), as containers keep it.
want="meltano[postgres]==$MELTANO_VERSION $py_version"
if ! up_to_date "$stamp" "$want" || [ ! -x .venv-meltano/bin/meltano ]; then
  log "installing meltano $MELTANO_VERSION into .venv-meltano"
  rm -rf .venv-meltano
  "$PYTHON" -m venv .venv-meltano
  # (grep: this machine's pip.conf names local wheel dirs that may not exist; pip warns per package)
  .venv-meltano/bin/python -m pip install -q "meltano[postgres]==$MELTANO_VERSION" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
  [ -x .venv-meltano/bin/meltano ] || { log "pip could not install meltano"; exit 1; }
  echo "$want" >"$stamp"
fi
UV="$ROOT/.venv-meltano/bin/uv"

# 2. The project, editable, with the dev extras, in .venv.
stamp=".venv/.bootstrap-stamp"
want="$(fingerprint pyproject.toml scripts/bootstrap.sh) $py_version"
if ! up_to_date "$stamp" "$want" || [ ! -x .venv/bin/tap-whoop ]; then
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' 2>/dev/null; then
    log "creating .venv"
    rm -rf .venv
    "$PYTHON" -m venv .venv
  fi
  log "installing tap-whoop (editable) with [dev] extras into .venv"
  VIRTUAL_ENV="$ROOT/.venv" "$UV" pip install -q --python "$ROOT/.venv/bin/python" -e ".[dev]"
  echo "$want" >"$stamp"
fi
ln -sf ../../.venv-meltano/bin/meltano .venv/bin/meltano

# 3. The Meltano plugins (a stamp, because `meltano install` always reinstalls).
stamp=".meltano/.bootstrap-stamp"
want="$(fingerprint meltano.yml pyproject.toml scripts/bootstrap.sh) $py_version"
plugins=(.meltano/extractors/tap-whoop/venv/bin/tap-whoop
         .meltano/loaders/target-postgres/venv/bin/target-postgres
         .meltano/loaders/target-duckdb/venv/bin/target-duckdb
         .meltano/utilities/dbt-duckdb/venv/bin/dbt
         .meltano/utilities/dbt-postgres/venv/bin/dbt)
missing=0
for executable in "${plugins[@]}"; do [ -x "$executable" ] || missing=1; done
if ! up_to_date "$stamp" "$want" || [ "$missing" = 1 ]; then
  log "meltano install (tap-whoop, target-postgres, target-duckdb, dbt-duckdb, dbt-postgres)"
  .venv-meltano/bin/meltano install >&2
  echo "$want" >"$stamp"
fi
mkdir -p output
log "ready: $(.venv/bin/tap-whoop --version 2>/dev/null | head -n1), $(.venv-meltano/bin/meltano --version)"
