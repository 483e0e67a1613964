#!/usr/bin/env bash
# Installs (from Debian's packages) and starts a PostgreSQL server on loopback for the storage tests, and
# prints the URL of a database the tests may create databases with. Idempotent; needs root.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
pg_lsclusters -h | grep -q "^$version main" || pg_createcluster "$version" main >&2
pg_ctlcluster "$version" main start >&2 2>/dev/null || pg_ctlcluster "$version" main status >&2
as_postgres() { su postgres -c "$*"; }
if ! as_postgres "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='finetune_hpo'\"" | grep -q 1; then
  as_postgres "psql -q -c \"CREATE ROLE finetune_hpo LOGIN PASSWORD 'finetune_hpo' CREATEDB\"" >&2
fi
if ! as_postgres "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='finetune_hpo'\"" | grep -q 1; then
  as_postgres "createdb -O finetune_hpo finetune_hpo" >&2
fi
# The cluster's port as pg_lsclusters reports it: 5432 unless another cluster already held it.
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
echo "postgresql://finetune_hpo:finetune_hpo@127.0.0.1:${port}/finetune_hpo"
