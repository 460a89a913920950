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
cd "$(dirname "$0")/.."
N=${1:-5000}
PGBIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PGBIN/initdb" ] || { echo "initdb not found; apt-get install postgresql" >&2; exit 1; }
PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --bin infraveil >&2
BIN=${BIN:-${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE/infraveil}

WORK=$(mktemp -d /tmp/infraveil-idle-XXXX)
chmod 711 "$WORK"
AS=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    AS=(runuser -u postgres --)
fi
mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/pg"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
FWPORT=$(free_port)
FW=""
cleanup() {
    [ -n "$FW" ] && kill "$FW" 2>/dev/null || true
    "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n $((N * 3 + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"${AS[@]}" "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 --no-sync >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w -t 120 \
    -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=$((N + 20)) -c shared_buffers=128MB -c fsync=off" start >/dev/null
PW=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
DEV=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
psql -q -h "$WORK/pg" -p "$PGPORT" -U postgres -d postgres \
    -c "CREATE ROLE app_owner LOGIN PASSWORD '$PW'" -c "CREATE DATABASE bench OWNER app_owner"
printf %s "$PW" > "$WORK/owner.pw"
printf %s "$DEV" > "$WORK/dev.pw"
cat > "$WORK/fw.toml" <<TOML
listen = "127.0.0.1:$FWPORT"
data_dir = "$WORK/data"
policies_dir = "$PWD/policies"
[limits]
max_connections = $((N + 100))
[upstream]
host = "127.0.0.1"
port = $PGPORT
[upstream.passwords]
app_owner = { file = "$WORK/owner.pw" }
[[dev_credentials]]
identity = "deploy-bot"
role = "deployer"
secret = { file = "$WORK/dev.pw" }
TOML
INFRAVEIL_LOG=warn "$BIN" serve --config "$WORK/fw.toml" 2>"$WORK/fw.log" &
FW=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$FWPORT") 2>/dev/null && break; sleep 0.1; done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$FW/status"; }
URL="postgres://deploy-bot:$DEV@127.0.0.1:$FWPORT/bench"
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
