#!/usr/bin/env bash
# Throughput through the firewall versus PostgreSQL directly, from one run.
#
# Starts a throwaway cluster and `infraveil serve` in front of it (auditing
# every statement, as always), then runs pgbench with 8 clients: select-only
# (reads: records flushed within the read window) and tpcb-like (writes: each
# UPDATE/INSERT waits for its record to be durable, group-committed), in
# simple and prepared mode, direct and proxied, interleaved over several
# rounds so machine noise hits both sides alike, and prints proxied/direct as
# a ratio. BENCH_SCRIPTS="select-only" runs only the reads. PROFILE=profiling
# builds the firewall with line-level debug info, for `perf record -p` on it
# (release binaries keep only the symbol table).
#
#   benches/pgbench.sh [seconds-per-run] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-3}
CLIENTS=8

PGBIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PGBIN/initdb" ] || { echo "initdb not found; apt-get install postgresql" >&2; exit 1; }

PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --bin infraveil >&2
BIN=${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE/infraveil

WORK=$(mktemp -d /tmp/infraveil-bench-XXXX)
chmod 711 "$WORK"
AS=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    AS=(runuser -u postgres --)
    mkdir -p "$WORK/pg" && chown postgres "$WORK/pg"
else
    mkdir -p "$WORK/pg"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
FWPORT=$(free_port)
PROXY_PID=""
cleanup() {
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null || true
    "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"${AS[@]}" "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 --no-sync >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
OWNER_PW=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
DEV_PW=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
psql -q -h "$WORK/pg" -p "$PGPORT" -U postgres -d postgres \
    -c "CREATE ROLE app_owner LOGIN PASSWORD '$OWNER_PW'" -c "CREATE DATABASE bench OWNER app_owner"
printf %s "$OWNER_PW" > "$WORK/owner.pw"
printf %s "$DEV_PW" > "$WORK/dev.pw"
cat > "$WORK/infraveil.toml" <<TOML
listen = "127.0.0.1:$FWPORT"
data_dir = "$WORK/data"
policies_dir = "$PWD/policies"
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
INFRAVEIL_LOG=warn "$BIN" serve --config "$WORK/infraveil.toml" 2>"$WORK/infraveil.log" &
PROXY_PID=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$FWPORT) 2>/dev/null && break; sleep 0.1; done

DIRECT="postgres://app_owner:$OWNER_PW@127.0.0.1:$PGPORT/bench"
PROXIED="postgres://deploy-bot:$DEV_PW@127.0.0.1:$FWPORT/bench"
pgbench -q -i -s 10 "$DIRECT" >/dev/null 2>&1

tps() { pgbench -n -b "$3" -c $CLIENTS -j 2 -T "$SECS" -M "$2" "$1" 2>/dev/null | awk '/^tps/ {print $3; exit}'; }
echo "pgbench, $CLIENTS clients, ${SECS}s per run, $ROUNDS rounds (interleaved)"
for script in ${BENCH_SCRIPTS:-select-only tpcb-like}; do
    for mode in simple prepared; do
        d_sum=0; p_sum=0
        for r in $(seq "$ROUNDS"); do
            d=$(tps "$DIRECT" $mode $script); p=$(tps "$PROXIED" $mode $script)
            echo "  $script $mode round $r: direct $d tps, proxied $p tps"
            d_sum=$(awk "BEGIN {print $d_sum + $d}"); p_sum=$(awk "BEGIN {print $p_sum + $p}")
        done
        awk -v s="$script" -v m="$mode" -v d="$d_sum" -v p="$p_sum" -v n="$ROUNDS" \
            'BEGIN { printf "%s %s: direct %.0f tps, proxied %.0f tps, proxied/direct = %.3f\n", s, m, d/n, p/n, p/d }'
    done
done
# The firewall's own count of what it recorded, for the curious.
echo "audit records on disk: $(du -sh "$WORK/data/state" | cut -f1)"
