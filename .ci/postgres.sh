#!/usr/bin/env bash
# Installs (apt) and starts a local PostgreSQL for the server's tests, and
# prints the URL to export as GREENLIGHT_TEST_POSTGRES_URL. Idempotent.
# Usage: export GREENLIGHT_TEST_POSTGRES_URL="$(bash .ci/postgres.sh)"
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "PostgreSQL is not installed and this is not root: apt-get install postgresql" >&2
        exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version main"; then
    pg_createcluster "$version" main >&2
fi
pg_ctlcluster "$version" main start >&2 2>/dev/null || true
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 && break
    sleep 1
done
pg_isready -q -h 127.0.0.1 || { echo "PostgreSQL did not start" >&2; exit 1; }
su postgres -c "psql -q -v ON_ERROR_STOP=1" >&2 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'greenlight') THEN
    CREATE ROLE greenlight LOGIN CREATEDB PASSWORD 'greenlight';
  END IF;
END $$;
SELECT 'CREATE DATABASE greenlight OWNER greenlight'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'greenlight')\gexec
SQL
echo "postgres://greenlight:greenlight@127.0.0.1:5432/greenlight"
