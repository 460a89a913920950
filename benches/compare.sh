#!/usr/bin/env bash
# Infraveil beside direct PostgreSQL and pgbouncer, from one interleaved run.
#
#   benches/compare.sh [seconds-per-run] [rounds]
#
# Starts a throwaway PostgreSQL (scale-10 pgbench data), pgbouncer in session
# and in transaction mode, and `infraveil serve` (auditing as always, with the
# example policies), then runs each workload against each of them in turn,
# round after round, so machine noise hits all sides alike. Prints tps per
# round, the worst-round ratio to direct for each, and the firewall's (and
# pgbouncer's) CPU per transaction from /proc. BEFORE=/path/to/infraveil adds
# a second firewall binary to compare against; ONLY="-S simple" runs only the
# workloads whose name starts so. pgbouncer is installed with
# apt-get when missing; without it its columns are skipped.
set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
SECS=${1:-10}
ROUNDS=${2:-2}
if ! command -v pgbouncer >/dev/null 2>&1; then
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null 2>&1) || true
fi
bench_init
AFTER=$BIN
BEFORE=${BEFORE:-}
start_postgres "-c max_connections=300"
pgbench -q -i -s 10 "$DIRECT" >/dev/null 2>&1

SIDES=(direct)
PID_direct=""; URL_direct=$DIRECT
if command -v pgbouncer >/dev/null 2>&1; then
    for mode in session transaction; do
        port=$(free_port)
        cat > "$WORK/pgb-$mode.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
auth_type = scram-sha-256
auth_file = $WORK/users.txt
pool_mode = $mode
max_client_conn = 500
default_pool_size = 80
unix_socket_dir =
INI
        echo "\"app_owner\" \"$PW\"" > "$WORK/users.txt"
        [ "$(id -u)" = 0 ] && chown postgres "$WORK/pgb-$mode.ini" "$WORK/users.txt"
        "${EXEC_AS[@]}" pgbouncer "$WORK/pgb-$mode.ini" >"$WORK/pgb-$mode.log" 2>&1 &
        PIDS+=($!)
        name=pgb_${mode:0:4}
        eval "PID_$name=$!; URL_$name='postgres://app_owner:$PW@127.0.0.1:$port/bench'"
        SIDES+=("$name")
    done
    sleep 1
else
    echo "note: pgbouncer not available; its columns are skipped" >&2
fi
if [ -n "$BEFORE" ]; then start_firewall before "$BEFORE"; SIDES+=(before); fi
start_firewall infraveil "$AFTER"; SIDES+=(infraveil)

cpu_ticks() { [ -n "$1" ] && awk '{print $14+$15}' "/proc/$1/stat" || echo 0; }
TCK=$(getconf CLK_TCK)
# name | pgbench args
WORKLOADS=(
    "-S simple, 8|-S -M simple -c 8 -j 2"
    "-S extended, 8|-S -M extended -c 8 -j 2"
    "-S prepared, 8|-S -M prepared -c 8 -j 2"
    "TPC-B simple, 8|-M simple -c 8 -j 2"
    "-S simple, 1|-S -M simple -c 1 -j 1"
    "-S simple, 64|-S -M simple -c 64 -j 2"
)
echo "pgbench scale 10, ${SECS}s per run, $ROUNDS rounds interleaved; $(nproc) cores; $(psql --version | head -1)"
declare -A WORST CPU
for w in "${WORKLOADS[@]}"; do
    name=${w%%|*}; args=${w#*|}
    # ONLY="-S simple" runs the workloads whose name starts so.
    [ -n "${ONLY:-}" ] && [[ "$name" != "$ONLY"* ]] && continue
    for r in $(seq "$ROUNDS"); do
        line="  $name round $r:"
        declare -A TPS=()
        for side in "${SIDES[@]}"; do
            url_var=URL_$side; pid_var=PID_$side
            c0=$(cpu_ticks "${!pid_var}")
            # shellcheck disable=SC2086
            out=$(pgbench -n $args -T "$SECS" "${!url_var}" 2>/dev/null || true)
            c1=$(cpu_ticks "${!pid_var}")
            tps=$(awk '/^tps/ {print $3; exit}' <<<"$out"); tps=${tps:-0}
            n=$(awk -F': ' '/^number of transactions actually processed/ {split($2,a,"/"); print a[1]}' <<<"$out"); n=${n:-0}
            TPS[$side]=$tps
            if [ -n "${!pid_var}" ] && [ "$n" -gt 0 ]; then
                us=$(awk -v c=$((c1 - c0)) -v n="$n" -v k="$TCK" 'BEGIN {printf "%.0f", c / k * 1e6 / n}')
                CPU["$name|$side"]="${CPU["$name|$side"]:-}${CPU["$name|$side"]:+/}$us"
                line="$line $side $tps ($us us/txn);"
            else
                line="$line $side $tps;"
            fi
        done
        echo "$line"
        for side in "${SIDES[@]}"; do
            [ "$side" = direct ] && continue
            ratio=$(awk -v p="${TPS[$side]}" -v d="${TPS[direct]}" 'BEGIN {printf "%.2f", (d > 0 ? p / d : 0)}')
            key="$name|$side"
            prev=${WORST[$key]:-9}
            WORST[$key]=$(awk -v a="$prev" -v b="$ratio" 'BEGIN {print (b < a ? b : a)}')
        done
    done
done
echo
printf '| workload |'; for side in "${SIDES[@]}"; do [ "$side" = direct ] || printf ' %s |' "$side"; done; echo
printf '|---|'; for side in "${SIDES[@]}"; do [ "$side" = direct ] || printf -- '---|'; done; echo
for w in "${WORKLOADS[@]}"; do
    name=${w%%|*}
    [ -n "${ONLY:-}" ] && [[ "$name" != "$ONLY"* ]] && continue
    printf '| `%s` |' "$name"
    for side in "${SIDES[@]}"; do
        [ "$side" = direct ] && continue
        cpu=${CPU["$name|$side"]:-}
        printf ' %s%s |' "${WORST["$name|$side"]}" "${cpu:+ ($cpu µs)}"
    done
    echo
done
echo "(worst round's throughput / direct PostgreSQL; in brackets process CPU per transaction, per round)"
