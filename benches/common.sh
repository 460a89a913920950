# Shared set-up of the benchmark scripts (sourced, not run): a throwaway
# PostgreSQL run as an unprivileged user, and `infraveil serve` in front of
# it with the example policies and a dev credential. Everything started is
# stopped and the work directory removed on exit.
#
#   bench_init            PGBIN, BIN (built with $PROFILE), WORK, AS, EXEC_AS
#   start_postgres OPTS   a cluster with `-c` OPTS; PGPORT, PW, DEV, DIRECT
#   start_firewall NAME BINARY [TOML]
#                         a firewall (TOML appended to its config);
#                         PID_NAME, URL_NAME (POLICIES_DIR overrides the
#                         example policies, e.g. for an older binary)
cd "$(dirname "${BASH_SOURCE[0]}")/.."

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bench_init() {
    PGBIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
    [ -x "$PGBIN/initdb" ] || { echo "initdb not found; apt-get install postgresql" >&2; exit 1; }
    PROFILE=${PROFILE:-release}
    cargo build --profile "$PROFILE" --bin infraveil >&2
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE/infraveil
    WORK=$(mktemp -d /tmp/infraveil-bench-XXXX)
    chmod 711 "$WORK"
    mkdir -p "$WORK/pg"
    AS=()
    EXEC_AS=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$WORK/pg"
        AS=(runuser -u postgres --)
        # setpriv execs (runuser forks), so $! is the process itself and its
        # CPU can be read from /proc.
        EXEC_AS=(setpriv --reuid=postgres --regid=postgres --clear-groups --)
    fi
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}

start_postgres() {
    PGPORT=$(free_port)
    "${AS[@]}" "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 --no-sync >/dev/null
    "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w -t 120 \
        -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1 $1" start >/dev/null
    PW=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    DEV=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    psql -q -h "$WORK/pg" -p "$PGPORT" -U postgres -d postgres \
        -c "CREATE ROLE app_owner LOGIN PASSWORD '$PW'" -c "CREATE DATABASE bench OWNER app_owner"
    printf %s "$PW" > "$WORK/owner.pw"
    printf %s "$DEV" > "$WORK/dev.pw"
    DIRECT="postgres://app_owner:$PW@127.0.0.1:$PGPORT/bench"
}

start_firewall() {
    local port; port=$(free_port)
    cat > "$WORK/$1.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$WORK/data-$1"
policies_dir = "${POLICIES_DIR:-$PWD/policies}"
${3:-}
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
    INFRAVEIL_LOG=warn "$2" serve --config "$WORK/$1.toml" 2>"$WORK/$1.log" &
    PIDS+=($!)
    eval "PID_$1=$!; URL_$1='postgres://deploy-bot:$DEV@127.0.0.1:$port/bench'"
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return; sleep 0.1; done
    echo "$1 did not start: $(cat "$WORK/$1.log")" >&2
    exit 1
}
