#!/usr/bin/env bash
# Throughput through the firewall versus PostgreSQL directly, from one run.
#
# Starts a throwaway cluster and `infraveil serve` in front of it (auditing
# every statement, as always), then runs pgbench with 8 clients: select-only
# (reads: records flushed within the read window) and tpcb-like (writes in a
# block: the END waits for their records to be durable, group-committed), in
# simple and prepared mode, direct and proxied, interleaved over several
# rounds so machine noise hits both sides alike, and prints proxied/direct as
# a ratio. BENCH_SCRIPTS="select-only" runs only the reads. PROFILE=profiling
# builds the firewall with line-level debug info, for `perf record -p` on it
# (release binaries keep only the symbol table).
#
#   benches/pgbench.sh [seconds-per-run] [rounds]
set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
SECS=${1:-10}
ROUNDS=${2:-3}
CLIENTS=8
bench_init
start_postgres "-c max_connections=100"
start_firewall infraveil "$BIN"
PROXIED=$URL_infraveil
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
echo "audit records on disk: $(du -sh "$WORK/data-infraveil/state" | cut -f1)"
