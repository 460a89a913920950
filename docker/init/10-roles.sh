#!/bin/sh
# Create the least-privilege upstream roles and the sample schema.
set -e
for role in app_owner app_read app_write app_billing; do
  pw=$(cat /run/secrets/$role)
  psql -v ON_ERROR_STOP=1 -U postgres -c "CREATE ROLE $role LOGIN PASSWORD '$pw'"
done
psql -v ON_ERROR_STOP=1 -U postgres -c "CREATE DATABASE app OWNER app_owner"
