#!/bin/sh
# The login role Grafana's PostgreSQL data source reads as, made when the postgres image
# first starts on an empty volume (it runs /docker-entrypoint-initdb.d/ then, and never
# again). It gets no privilege here: metrics's migration 0004 grants it USAGE and SELECT on
# metrics's schema, nothing else. Roles are cluster-wide, so they are made here, never by a
# service's migrations. The password must be set (compose refuses to start without it).
set -e

: "${HOTLINE_GRAFANA_DB_PASSWORD:?set HOTLINE_GRAFANA_DB_PASSWORD, the password of Grafana's read-only role}"

# psql's :"name" and :'value' quote the role, database and password (no SQL injection).
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=role="${HOTLINE_GRAFANA_DB_ROLE:-hotline_grafana}" \
  --set=password="$HOTLINE_GRAFANA_DB_PASSWORD" \
  --set=database="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS;
-- Dashboards only read: every transaction of the role starts read-only.
ALTER ROLE :"role" SET default_transaction_read_only = on;
-- Only the owner (the services' user) and this role connect; nobody else makes temporary
-- tables or objects in public (PostgreSQL >= 15 revokes CREATE there already).
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO :"role";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
