#!/usr/bin/env bash
# What a row-estimate hold costs: one-row UPDATEs by key, from one
# interleaved run, direct, through the firewall as a role without row
# limits, and as the same role with `max_rows` (each UPDATE is first planned
# on a side connection). Prints tps, mean latency per statement, the
# latency a limited write adds, and the firewall's CPU per statement.
#
#   benches/row_limits.sh [seconds-per-run] [rounds]
set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
SECS=${1:-10}
ROUNDS=${2:-3}
CLIENTS=${CLIENTS:-4}
bench_init
# The cost looked for is the plan, not the disk: commits do not wait for
# the WAL flush, which on a shared machine is most of the noise.
start_postgres "-c max_connections=100 -c synchronous_commit=off"
pgbench -q -i -s 10 "$DIRECT" >/dev/null 2>&1

# `deploy-bot` is the dev credential start_firewall gives; `limited-bot` has
# the same rights and a row limit.
mkdir -p "$WORK/policies"
cat > "$WORK/policies/bench.toml" <<'TOML'
[roles.deployer]
upstream_user = "app_owner"
allow = ["read", "write"]

[roles.limited]
upstream_user = "app_owner"
allow = ["read", "write"]
approve = ["destructive"]
approvers = ["oncall"]
max_rows = 1000

[identities.deploy-bot]
kind = "ci"
roles = ["deployer"]

[identities.limited-bot]
kind = "ci"
roles = ["limited"]

[identities.oncall]
kind = "human"
TOML
POLICIES_DIR="$WORK/policies" start_firewall fw "$BIN" "[[dev_credentials]]
identity = \"limited-bot\"
role = \"limited\"
secret = { file = \"$WORK/dev.pw\" }"
FW=$PID_fw
PLAIN=$URL_fw
LIMITED=${URL_fw/deploy-bot/limited-bot}

cat > "$WORK/update.sql" <<'SQL'
\set aid random(1, 1000000)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
SQL

# Firewall CPU (user + system ticks) so far.
ticks() { awk '{print $14 + $15}' "/proc/$FW/stat"; }
HZ=$(getconf CLK_TCK)
# "tps latency_ms transactions"
run() {
    pgbench -n -f "$WORK/update.sql" -c "$CLIENTS" -j 2 -T "$SECS" -M "$2" "$1" 2>/dev/null |
        awk '/^tps/ {t=$3} /^latency average/ {l=$4} /^number of transactions actually processed/ {split($6, a, "/"); n=a[1]} END {print t, l, n}'
}
echo "one-row UPDATE by key, $CLIENTS clients, ${SECS}s per run, $ROUNDS rounds (interleaved)"
for mode in simple prepared; do
    declare -A tps=() lat=() cpu=() n=()
    for r in $(seq "$ROUNDS"); do
        for side in direct plain limited; do
            case $side in direct) url=$DIRECT ;; plain) url=$PLAIN ;; limited) url=$LIMITED ;; esac
            before=$(ticks)
            read -r t l c < <(run "$url" $mode)
            after=$(ticks)
            echo "  $mode round $r $side: $t tps, $l ms"
            tps[$side]=$(awk "BEGIN {print ${tps[$side]:-0} + $t}")
            lat[$side]=$(awk "BEGIN {print ${lat[$side]:-0} + $l}")
            cpu[$side]=$(awk "BEGIN {print ${cpu[$side]:-0} + ($after - $before) / $HZ}")
            n[$side]=$(awk "BEGIN {print ${n[$side]:-0} + $c}")
        done
    done
    for side in direct plain limited; do
        awk -v s=$side -v m=$mode -v t="${tps[$side]}" -v l="${lat[$side]}" -v c="${cpu[$side]}" -v k="${n[$side]}" -v r="$ROUNDS" -v dt="${tps[direct]}" \
            'BEGIN { printf "%s %-8s %7.0f tps (%.3f of direct), %.3f ms per statement", m, s, t/r, t/dt, l/r;
                     if (s != "direct") printf ", firewall CPU %.0f us per statement", c * 1e6 / k; printf "\n" }'
    done
    awk -v p="${lat[plain]}" -v l="${lat[limited]}" -v r="$ROUNDS" \
        'BEGIN { printf "%s: a limited write adds %.3f ms per statement\n", "'$mode'", (l - p) / r }'
    unset tps lat cpu n
done
