#!/usr/bin/env bash
# Ensure a local PostgreSQL server (Debian packages) is installed and running,
# with role/database `tap_whoop` (password `tap_whoop`) for the target-postgres
# loader in meltano.yml. Idempotent: safe to run repeatedly, on a fresh machine
# (CI) or when postgres is already up. Must run as root (or via sudo).
#
# Env overrides: PG_USER, PG_PASSWORD, PG_DATABASE, PG_PORT (default 5432).
# Prints one line: "postgresql://USER:PASSWORD@127.0.0.1:PORT/DATABASE".
set -euo pipefail
# runuser, pg_ctlcluster and friends live in sbin, which a minimal PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

PG_USER="${PG_USER:-tap_whoop}"
PG_PASSWORD="${PG_PASSWORD:-tap_whoop}"
PG_DATABASE="${PG_DATABASE:-tap_whoop}"
WANT_PORT="${PG_PORT:-5432}"

log() { echo "postgres.sh: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E bash "$0" "$@"
  fi
  log "must run as root"; exit 1
fi

server_bin() { ls -1 /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n1; }

# 1. Install the server when no server binary exists.
if [ -z "$(server_bin)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
  log "installing postgresql from apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi

BIN="$(server_bin)"
VERSION="$(basename "$(dirname "$(dirname "$BIN")")")"   # e.g. 15

# 2. Pick a cluster: prefer one already online, else one of our version, else create `main`.
cluster_line() { pg_lsclusters --no-header 2>/dev/null | awk -v v="$1" '$1==v' | head -n1; }
LINE="$(pg_lsclusters --no-header 2>/dev/null | awk '$4 ~ /^online/' | head -n1)"
[ -n "$LINE" ] || LINE="$(cluster_line "$VERSION")"
if [ -z "$LINE" ]; then
  log "creating cluster $VERSION/main on port $WANT_PORT"
  pg_createcluster --port "$WANT_PORT" "$VERSION" main >&2
  LINE="$(cluster_line "$VERSION")"
fi
read -r CVER CNAME CPORT CSTATUS _ <<<"$LINE"

# 3. Start it if it is not running (ignore "already running" races).
if [[ "$CSTATUS" != online* ]]; then
  log "starting cluster $CVER/$CNAME"
  # Containers often lack the socket dir that systemd-tmpfiles would create.
  install -d -o postgres -g postgres -m 2775 /var/run/postgresql
  pg_ctlcluster "$CVER" "$CNAME" start >&2 || {
    pg_lsclusters --no-header | awk -v v="$CVER" -v n="$CNAME" '$1==v && $2==n && $4 ~ /^online/' | grep -q . \
      || { log "failed to start cluster; see /var/log/postgresql/"; exit 1; }
  }
fi
CPORT="$(pg_lsclusters --no-header | awk -v v="$CVER" -v n="$CNAME" '$1==v && $2==n {print $3}')"

# Wait until it accepts connections.
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$CPORT" && break
  sleep 1
done
pg_isready -q -h 127.0.0.1 -p "$CPORT" || { log "server not ready on 127.0.0.1:$CPORT"; exit 1; }

# 4. Role and database (as the postgres superuser, over the local socket).
psql_su() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$CPORT" -d postgres "$@"; }
psql_su -v u="$PG_USER" -v p="$PG_PASSWORD" >&2 <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'u', :'p')
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'u') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'u', :'p') \gexec
SQL
psql_su -v u="$PG_USER" -v d="$PG_DATABASE" >&2 <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'d', :'u')
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'d') \gexec
SQL

# 5. Check a TCP password login works, then print the connection.
PGPASSWORD="$PG_PASSWORD" psql -X -q -h 127.0.0.1 -p "$CPORT" -U "$PG_USER" -d "$PG_DATABASE" -tAc 'SELECT 1' >/dev/null \
  || { log "password login to $PG_DATABASE as $PG_USER failed"; exit 1; }
echo "postgresql://${PG_USER}:${PG_PASSWORD}@127.0.0.1:${CPORT}/${PG_DATABASE}"
