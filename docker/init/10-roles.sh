#!/bin/sh
# Create the least-privilege upstream roles, the `app` database, and the
# sample schema (the same file the demo and the tests load).
set -e
for role in app_owner app_read app_write app_billing; do
  pw=$(cat /run/secrets/$role)
  psql -v ON_ERROR_STOP=1 -U postgres -c "CREATE ROLE $role LOGIN PASSWORD '$pw'"
done
psql -v ON_ERROR_STOP=1 -U postgres -c "CREATE DATABASE app OWNER app_owner"
psql -v ON_ERROR_STOP=1 -U postgres -d app -f /sample/sample_schema.sql
