#!/bin/sh
# The postgres image runs this once, when it creates the database (an empty data volume), as
# POSTGRES_USER: the role that owns the database and that Remediator's migrations run as.
#
# Grafana's PostgreSQL datasource reads the store as a login that can only SELECT. Migration 0002
# (incidents/migrations) sets that up: it grants this database's tables to the group role
# `remediator_readonly` and, when it creates that group itself, adds the login `remediator_grafana`
# without a password, which is enough only where PostgreSQL trusts the connection. This image asks
# every TCP client for a password, so this script creates both roles first, the login with
# GRAFANA_DB_PASSWORD: the migration then finds the group, grants to it, and leaves the login as it is
# (a group it did not create keeps the logins its creator made).
#
# Reads GRAFANA_DB_USER and GRAFANA_DB_PASSWORD (compose.yaml gives Grafana the same values), and
# REMEDIATOR_READONLY_ROLE, the group's name, for a migration configured with another one.
# The image runs this file when it is executable and sources it when it is not (a checkout can lose
# the mode), so it works either way: it changes no shell option, and it fails through a missing
# variable or psql's exit status, both of which stop the image's set-up.

: "${GRAFANA_DB_USER:?GRAFANA_DB_USER must name the login Grafana uses}"
: "${GRAFANA_DB_PASSWORD:?GRAFANA_DB_PASSWORD must be set}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set group="${REMEDIATOR_READONLY_ROLE:-remediator_readonly}" \
    --set login="$GRAFANA_DB_USER" --set login_password="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE :"group" NOLOGIN;
CREATE ROLE :"login" LOGIN PASSWORD :'login_password' IN ROLE :"group";
-- Belt and braces on top of the grants: its sessions cannot write even where a grant would allow
-- it, and a runaway panel query is cut off instead of holding a connection of the store. Migration
-- 0003 sets the same two for this database on every login of the group, wherever the store runs.
ALTER ROLE :"login" SET default_transaction_read_only = on;
ALTER ROLE :"login" SET statement_timeout = '10s';
SQL
