#!/usr/bin/env bash
# Memory per idle client connection through the firewall.
#
#   benches/idle.sh [connections]     (default 5000)
#
# Starts a throwaway PostgreSQL (max_connections to match) and `infraveil
# serve`, opens N authenticated client connections through the firewall with
# pgbench (each runs `\sleep` and holds its session, so each also holds its
# upstream connection), and prints the firewall's resident memory before and
# while they are open, and the difference per connection.
set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
N=${1:-5000}
bench_init
ulimit -n $((N * 3 + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
start_postgres "-c max_connections=$((N + 20)) -c shared_buffers=128MB -c fsync=off"
start_firewall fw "$BIN" "[limits]
max_connections = $((N + 100))"
FW=$PID_fw
rss() { awk '/^VmRSS/ {print $2}' "/proc/$FW/status"; }
URL=$URL_fw
# Warm up: one session, so what every daemon has anyway is in the baseline.
psql -q "$URL" -c 'SELECT 1' >/dev/null
BASE=$(rss)
# Hold the sessions long enough to connect them all and measure.
HOLD=$((30 + N / 100))
printf '\\sleep %s s\n' "$HOLD" > "$WORK/idle.sql"
pgbench -n -c "$N" -j 8 -f "$WORK/idle.sql" -t 1 "$URL" >"$WORK/pgbench.log" 2>&1 &
PGB=$!
# Wait until every session is in, then let allocations settle.
for _ in $(seq $((HOLD * 4))); do
    open=$(psql -At -h "$WORK/pg" -p "$PGPORT" -U postgres -d postgres \
        -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_owner'" 2>/dev/null || echo 0)
    [ "$open" -ge "$N" ] && break
    sleep 0.25
done
sleep 2
PEAK=$(rss)
kill "$PGB" 2>/dev/null || true
wait "$PGB" 2>/dev/null || true
echo "idle sessions through infraveil: $open of $N (upstream connections held by the firewall)"
echo "firewall RSS: ${BASE} KiB before, ${PEAK} KiB with them open"
awk -v b="$BASE" -v p="$PEAK" -v n="$open" 'BEGIN { if (n > 0) printf "per idle connection: %.1f KiB (client side and its upstream connection)\n", (p - b) / n }'
