"""psycopg 3 through the firewall, as its users drive it every day.

Run by tests/clients.rs with DATABASE_URL in the form `infraveil demo`
prints (TLS verified against the firewall's certificate), as an identity
whose role allows read, write and ddl and holds destructive statements
until approved (wait mode), in a database holding
`items (id int primary key, name text, price numeric, tags text[])` and
`held (id int primary key, v text)` with ten rows. AGENT_URL is an
identity whose writes are deferred: refused at once with the approval
request's id, run once when sent again after approval. The test approves
every request as soon as it is pending.
Prints one `ok:` line per check; any failure raises (exit status 1).
"""

import datetime
import decimal
import inspect
import os
import re
import threading
import time
import uuid

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb

URL = os.environ["DATABASE_URL"]
AGENT_URL = os.environ["AGENT_URL"]


def ok(what):
    print(f"ok: {what}", flush=True)


def main():
    print(f"psycopg {psycopg.__version__}, libpq {psycopg.pq.version()}", flush=True)
    with psycopg.connect(URL, autocommit=True) as conn:
        assert conn.info.pgconn.ssl_in_use, "not TLS"
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        ok("connect with the demo's URL, TLS verified")
        types(conn)
        transactions(conn)
        errors_then_work(conn)
        copy_in_and_out(conn)
        prepared_reuse(conn)
        pipeline(conn)
        server_side_cursor(conn)
        large_bytea(conn)
        listen_notify(conn)
        cancel(conn)
        held_wait(conn)
    held_defer()


def types(conn):
    values = (
        42,
        "ünïcödé ✓",
        decimal.Decimal("12345.6789"),
        datetime.datetime(2026, 12, 1, 12, 30, tzinfo=datetime.timezone.utc),
        datetime.date(2026, 2, 28),
        b"\x00\x01\xfe\xff",
        Jsonb({"a": [1, 2, None], "b": "x"}),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        [1, 2, 3],
        None,
        True,
        1.5,
    )
    sql = (
        "SELECT %s::int, %s::text, %s::numeric, %s::timestamptz, %s::date, %s::bytea,"
        " %s::jsonb, %s::uuid, %s::int[], %s::text, %s::bool, %s::float8"
    )
    expected = list(values)
    expected[6] = values[6].obj
    for binary in (False, True):
        with conn.cursor(binary=binary) as cur:
            row = cur.execute(sql, values).fetchone()
            assert list(row) == expected, (binary, row)
    ok("parameters and types round trip, text and binary results")


def transactions(conn):
    with conn.transaction():
        conn.execute("INSERT INTO items (id, name) VALUES (1, 'kept')")
    with conn.transaction():
        conn.execute("INSERT INTO items (id, name) VALUES (2, 'rolled back')")
        raise psycopg.Rollback()  # the block rolls back and swallows it
    with conn.transaction():
        conn.execute("INSERT INTO items (id, name) VALUES (3, 'savepoint outer')")
        try:
            with conn.transaction():  # a savepoint
                conn.execute("INSERT INTO items (id, name) VALUES (4, 'savepoint inner')")
                conn.execute("SELECT 1/0")
        except errors.DivisionByZero:
            pass
    ids = [r[0] for r in conn.execute("SELECT id FROM items ORDER BY id")]
    assert ids == [1, 3], ids
    ok("transactions: commit, rollback, a savepoint rolled back inside")


def errors_then_work(conn):
    try:
        conn.execute("SELECT 1/0")
        raise AssertionError("no error")
    except errors.DivisionByZero as e:
        assert e.sqlstate == "22012"
    assert conn.execute("SELECT 2").fetchone() == (2,)
    # The firewall's own refusal: a SQLSTATE, and the session goes on.
    try:
        conn.execute("SET ROLE postgres")
        raise AssertionError("SET ROLE ran")
    except errors.InsufficientPrivilege as e:
        assert e.sqlstate == "42501"
        assert "privileged" in str(e), str(e)
    assert conn.execute("SELECT 3").fetchone() == (3,)
    # An error inside a block aborts it until rollback, as in PostgreSQL.
    with conn.cursor() as cur:
        conn.autocommit = False
        try:
            cur.execute("SELECT * FROM no_such_table")
        except errors.UndefinedTable:
            pass
        try:
            cur.execute("SELECT 4")
            raise AssertionError("ran in a failed transaction")
        except errors.InFailedSqlTransaction:
            pass
        conn.rollback()
        conn.autocommit = True
        assert cur.execute("SELECT 5").fetchone() == (5,)
    ok("an error, then a working statement (PostgreSQL's and the firewall's errors)")


def copy_in_and_out(conn):
    rows = [(100 + i, f"copied {i}", decimal.Decimal(i) / 4, ["a", f"t{i}"]) for i in range(500)]
    with conn.cursor() as cur:
        with cur.copy("COPY items (id, name, price, tags) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        assert cur.rowcount == 500, cur.rowcount
        out = []
        with cur.copy(
            "COPY (SELECT id, name, price, tags FROM items WHERE id >= 100 ORDER BY id) TO STDOUT"
        ) as copy:
            copy.set_types(["int4", "text", "numeric", "text[]"])
            for r in copy.rows():
                out.append(r)
        assert [tuple(r) for r in out] == rows, out[:3]
        # Binary COPY, both ways.
        with cur.copy("COPY items (id, name) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text"])
            copy.write_row((9000, "binary"))
        with cur.copy("COPY (SELECT name FROM items WHERE id = 9000) TO STDOUT (FORMAT BINARY)") as copy:
            copy.set_types(["text"])
            assert list(copy.rows()) == [("binary",)]
        # A COPY the client abandons leaves a usable session.
        try:
            with cur.copy("COPY items (id, name) FROM STDIN") as copy:
                copy.write_row((9001, "never"))
                raise RuntimeError("client gives up")
        except (RuntimeError, errors.QueryCanceled):
            pass  # psycopg 3.1 raises the server's answer to CopyFail, later ones the cause
        assert conn.execute("SELECT count(*) FROM items WHERE id = 9001").fetchone() == (0,)
    ok("COPY FROM STDIN and TO STDOUT, text and binary, and an abandoned COPY")


def prepared_reuse(conn):
    sql = "SELECT id, name FROM items WHERE id = %s"
    for i in range(100, 120):
        row = conn.execute(sql, (i,), prepare=True).fetchone()
        assert row == (i, f"copied {i - 100}"), row
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM pg_prepared_statements WHERE statement LIKE 'SELECT id, name FROM items%%'"
        )
    ]
    assert len(names) == 1, names
    ok(f"a prepared statement reused 20 times ({names[0]})")


def pipeline(conn):
    with conn.pipeline():
        with conn.cursor() as cur:
            cur.execute("INSERT INTO items (id, name) VALUES (%s, %s)", (7000, "piped"))
            cur.executemany(
                "INSERT INTO items (id, name) VALUES (%s, %s)",
                [(7000 + i, f"piped {i}") for i in range(1, 50)],
            )
        # Another cursor: in a pipeline, psycopg 3.1 has no result for an
        # execute after an executemany on the same cursor (direct to
        # PostgreSQL too).
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM items WHERE id >= 7000 AND id < 8000")
            assert cur.fetchone() == (50,)
    ok("pipeline mode with executemany")


def server_side_cursor(conn):
    with conn.transaction():
        with conn.cursor(name="big") as cur:  # DECLARE, then FETCH itersize rows at a time
            cur.itersize = 5000
            cur.execute("SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
            n = total = 0
            for g, _ in cur:
                n += 1
                total += g
    assert (n, total) == (100000, 100000 * 100001 // 2), (n, total)
    ok("a server-side cursor over 100000 rows, 5000 at a time")


def large_bytea(conn):
    data = os.urandom(8 * 1024 * 1024)
    for binary in (False, True):
        with conn.cursor(binary=binary) as cur:
            back = cur.execute("SELECT %b::bytea, length(%b::bytea)", (data, data)).fetchone()
            assert back == (data, len(data)), (binary, len(back[0]), back[1])
    ok("an 8 MB bytea there and back, text and binary")


def listen_notify(conn):
    with psycopg.connect(URL, autocommit=True) as listener:
        listener.execute("LISTEN infraveil_chan")
        conn.execute("NOTIFY infraveil_chan, 'one'")
        conn.execute("SELECT pg_notify('infraveil_chan', %s)", ("two",))
        got = []
        # The listener is idle: the notifications arrive on their own.
        has_timeout = "timeout" in inspect.signature(listener.notifies).parameters  # 3.2+
        gen = listener.notifies(timeout=10, stop_after=2) if has_timeout else listener.notifies()
        try:
            for n in gen:
                got.append((n.channel, n.payload))
                if len(got) == 2:
                    break
        finally:
            gen.close()  # an open generator keeps the connection locked
        assert got == [("infraveil_chan", "one"), ("infraveil_chan", "two")], got
    ok("LISTEN, NOTIFY and pg_notify, delivered to an idle listener")


def cancel(conn):
    cancels = [("cancel", conn.cancel)]
    if hasattr(conn, "cancel_safe"):  # psycopg 3.2+: libpq 17's encrypted cancel
        cancels.append(("cancel_safe", conn.cancel_safe))
    for name, how in cancels:
        failed = []

        def send(how=how):
            try:
                how()
            except Exception as e:  # noqa: BLE001 - reported below
                failed.append(e)

        timer = threading.Timer(0.5, send)
        timer.start()
        started = time.monotonic()
        try:
            conn.execute("SELECT pg_sleep(30)")
            raise AssertionError("pg_sleep ran to its end")
        except errors.QueryCanceled as e:
            assert e.sqlstate == "57014", e.sqlstate
        finally:
            timer.join()
        assert not failed, f"conn.{name}(): {failed[0]}"
        assert time.monotonic() - started < 10
        assert conn.execute("SELECT 6").fetchone() == (6,)
        ok(f"a running pg_sleep cancelled with conn.{name}(), then a working statement")


def held_wait(conn):
    # DELETE without WHERE is destructive: held until approved (wait mode).
    cur = conn.execute("DELETE FROM held")
    assert cur.rowcount == 10, cur.rowcount
    ok("a held DELETE waits for its approval, then runs (wait mode)")


def held_defer():
    with psycopg.connect(AGENT_URL, autocommit=True) as agent:
        sql, args = "INSERT INTO held (id, v) VALUES (%s, %s)", (100, "deferred")
        try:
            agent.execute(sql, args)
            raise AssertionError("a deferred write ran at once")
        except errors.InsufficientPrivilege as e:
            assert e.sqlstate == "42501"
            m = re.search(r"approval request (a-[0-9a-f]+)", e.diag.message_primary)
            assert m, e.diag.message_primary
            assert m.group(1) in (e.diag.message_hint or ""), e.diag.message_hint
        for _ in range(100):
            try:
                agent.execute(sql, args)
                break
            except errors.InsufficientPrivilege:
                time.sleep(0.2)  # not approved yet
        else:
            raise AssertionError("never approved")
        assert agent.execute("SELECT v FROM held WHERE id = 100").fetchall() == [("deferred",)]
    ok(f"a deferred INSERT refused with its approval id ({m.group(1)}), run once approved")


if __name__ == "__main__":
    main()
