#!/usr/bin/env bash
# What shared state costs an audited write: one-row UPDATEs by key on a
# small table, from one interleaved run, direct, through a firewall keeping
# its state in sled under data_dir (the default), and through the same
# binary with `[state] backend = "postgres"` on a control database. Each
# such UPDATE is a durable audited write: it is not forwarded until its
# audit record is durable, so the difference to direct is what a backend's
# commit costs. Prints tps, mean latency per statement, the ratio to
# direct, the latency each backend adds per audited write, the firewall's
# CPU per statement, the cluster's WAL flushes per statement, and for the
# postgres backend the control database's commits and backend CPU per
# statement (sled does that work in-process).
#
#   benches/state.sh [seconds-per-run] [rounds] [clients]     (10, 3, 4)
#
# One throwaway cluster holds both the protected `bench` database and the
# control database `infraveil_state` (its own role). The control database
# keeps synchronous_commit = on, PostgreSQL's default: each audit commit
# waits for its WAL flush, as it would in production, and that durable cost
# is the point. The protected database runs with synchronous_commit = off,
# as in row_limits.sh: its own commit is the same on all three sides, so
# waiting for it would only add the disk's noise to every side and hide the
# difference looked for; what is measured is what the firewall adds on top
# of the application's own commit. (One cluster means one WAL: an audit
# commit also flushes the bench writes written before it, which the
# walwriter would otherwise flush within wal_writer_delay. That is a small
# share of one fsync, and the same fsync a separate control cluster would
# make for the audit records alone.)
set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
SECS=${1:-10}
ROUNDS=${2:-3}
CLIENTS=${3:-4}
THREADS=$((CLIENTS < 2 ? CLIENTS : 2))
bench_init
start_postgres "-c max_connections=100 -c synchronous_commit=off"
pg() { psql -q -X -v ON_ERROR_STOP=1 -h "$WORK/pg" -p "$PGPORT" -U postgres "$@"; }

# The control database: a role of its own that owns it, and the durable
# commit back for every session in it (the cluster's default is off, above).
STATE_PW=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
pg -d postgres \
    -c "CREATE ROLE infraveil_state LOGIN PASSWORD '$STATE_PW'" \
    -c "CREATE DATABASE infraveil_state OWNER infraveil_state" \
    -c "ALTER DATABASE infraveil_state SET synchronous_commit = on"
printf 'postgres://infraveil_state:%s@127.0.0.1:%s/infraveil_state' "$STATE_PW" "$PGPORT" > "$WORK/state.url"
sc=$(psql -X -At "$(cat "$WORK/state.url")" -c "SHOW synchronous_commit")
[ "$sc" = on ] || { echo "control database has synchronous_commit = $sc, not on" >&2; exit 1; }

# A small table: the write is cheap, so the audit commit is most of what
# the firewall adds. 1000 keys keep 4-16 clients off each other's rows.
PGPASSWORD=$PW psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U app_owner -d bench <<'SQL'
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0);
INSERT INTO counters (id) SELECT generate_series(1, 1000);
VACUUM ANALYZE counters;
SQL
cat > "$WORK/update.sql" <<'SQL'
\set id random(1, 1000)
UPDATE counters SET n = n + 1 WHERE id = :id;
SQL

start_firewall sled "$BIN"
start_firewall pgstate "$BIN" "[state]
backend = \"postgres\"
url = { file = \"$WORK/state.url\" }
instance = \"bench-pg\"
tls = \"disable\""
SIDES=(direct sled pgstate)
declare -A URL=([direct]=$DIRECT [sled]=$URL_sled [pgstate]=$URL_pgstate)
declare -A PID=([direct]="" [sled]=$PID_sled [pgstate]=$PID_pgstate)

HZ=$(getconf CLK_TCK)
# CPU ticks (user + system) of a process so far; 0 for none.
ticks() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
# "pid ticks" of each backend connected to the control database.
state_backends() {
    pg -At -d postgres -c "SELECT pid FROM pg_stat_activity WHERE datname = 'infraveil_state' AND pid <> pg_backend_pid()" |
        while read -r p; do [ -r "/proc/$p/stat" ] && echo "$p $(ticks "$p")"; done || true
}
# Ticks the control database's backends used between two state_backends
# snapshots; a backend that connected in between counts from zero.
state_ticks() { awk 'FILENAME == ARGV[1] {b[$1] = $2; next} {s += $2 - b[$1]} END {print s + 0}' "$1" "$2"; }
# "commits wal_syncs": transactions committed in the control database (any,
# read-only ones too) and WAL flushes of the whole cluster so far. The bench
# database does not wait for its WAL (above), so the walwriter's flushes
# are the direct and sled rounds' baseline, and what the postgres backend
# adds to them are its durable commits. Backends report these at most once
# a second when idle, hence the sleep.
pgstats() {
    sleep 1.2
    pg -At -F ' ' -d postgres -c "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = 'infraveil_state'), wal_sync FROM pg_stat_wal"
}

# "tps latency_ms transactions"
run() {
    pgbench -n -f "$WORK/update.sql" -c "$CLIENTS" -j "$THREADS" -T "$SECS" -M simple "$1" 2>"$WORK/pgbench.err" |
        awk '/^tps/ {t=$3} /^latency average/ {l=$4} /^number of transactions actually processed/ {split($6, a, "/"); n=a[1]} END {print t, l, n}'
}
echo "one-row UPDATE by key (durable audited write), $CLIENTS clients, ${SECS}s per run, $ROUNDS rounds interleaved; $(nproc) cores; $(psql --version | head -1)"
declare -A tps=() lat=() cpu=() n=() syncs=()
pg_commits=0
pg_cpu=0
for r in $(seq "$ROUNDS"); do
    for side in "${SIDES[@]}"; do
        read -r c0 w0 < <(pgstats)
        state_backends > "$WORK/sb0"
        before=$(ticks "${PID[$side]}")
        read -r t l c < <(run "${URL[$side]}")
        after=$(ticks "${PID[$side]}")
        if [ -z "${c:-}" ] || [ "$c" = 0 ]; then
            echo "round $r $side: pgbench failed: $(cat "$WORK/pgbench.err")" >&2
            [ "$side" != direct ] && echo "firewall log: $(tail -20 "$WORK/$side.log")" >&2
            exit 1
        fi
        state_backends > "$WORK/sb1"
        read -r c1 w1 < <(pgstats)
        extra=$(awk -v w="$((w1 - w0))" -v k="$c" 'BEGIN {printf ", %.2f WAL flushes per statement", w / k}')
        syncs[$side]=$((${syncs[$side]:-0} + w1 - w0))
        if [ "$side" = pgstate ]; then
            sc=$(state_ticks "$WORK/sb0" "$WORK/sb1")
            pg_commits=$((pg_commits + c1 - c0))
            pg_cpu=$(awk "BEGIN {print $pg_cpu + $sc / $HZ}")
            extra+=$(awk -v d="$((c1 - c0))" -v k="$c" 'BEGIN {printf ", %.2f control commits per statement", d / k}')
        fi
        awk -v r="$r" -v s="$side" -v t="$t" -v l="$l" -v a="$after" -v b="$before" -v k="$c" -v hz="$HZ" -v x="$extra" \
            'BEGIN { printf "  round %d %-8s %7.0f tps, %.3f ms", r, s, t, l;
                     if (s != "direct") printf ", firewall CPU %.0f us per statement", (a - b) / hz * 1e6 / k;
                     printf "%s\n", x }'
        tps[$side]=$(awk "BEGIN {print ${tps[$side]:-0} + $t}")
        lat[$side]=$(awk "BEGIN {print ${lat[$side]:-0} + $l}")
        cpu[$side]=$(awk "BEGIN {print ${cpu[$side]:-0} + ($after - $before) / $HZ}")
        n[$side]=$(awk "BEGIN {print ${n[$side]:-0} + $c}")
    done
done
echo "mean of $ROUNDS rounds:"
for side in "${SIDES[@]}"; do
    awk -v s="$side" -v t="${tps[$side]}" -v l="${lat[$side]}" -v c="${cpu[$side]}" -v k="${n[$side]}" -v r="$ROUNDS" \
        -v dt="${tps[direct]}" -v dl="${lat[direct]}" -v w="${syncs[$side]}" \
        'BEGIN { printf "  %-8s %7.0f tps (%.3f of direct), %.3f ms per statement", s, t/r, t/dt, l/r;
                 if (s != "direct") printf ", +%.3f ms per audited write, firewall CPU %.0f us per statement", (l - dl)/r, c * 1e6 / k;
                 printf ", %.2f WAL flushes per statement\n", w / k }'
done
awk -v d="$pg_commits" -v c="$pg_cpu" -v k="${n[pgstate]}" \
    'BEGIN { printf "  control database (postgres backend): %.2f commits and %.0f us of backend CPU per statement\n", d / k, c * 1e6 / k }'
awk -v s="${lat[sled]}" -v p="${lat[pgstate]}" -v r="$ROUNDS" \
    'BEGIN { printf "postgres state costs %+.3f ms per audited write against sled\n", (p - s) / r }'
