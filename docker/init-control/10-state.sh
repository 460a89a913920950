#!/bin/sh
# The control database of docker/compose.ha.yaml: a role of its own, not a
# superuser, that owns `infraveil_state` (the firewalls make their tables
# in it).
set -e
pw=$(cat /run/secrets/state)
psql -v ON_ERROR_STOP=1 -U postgres -c "CREATE ROLE infraveil LOGIN PASSWORD '$pw'"
psql -v ON_ERROR_STOP=1 -U postgres -c "CREATE DATABASE infraveil_state OWNER infraveil"
