"""psycopg 3 through the firewall, as its users drive it every day.

Run by tests/clients.rs with DATABASE_URL in the form `infraveil demo`
prints (TLS verified against the firewall's certificate), as an identity
whose role allows read, write and ddl, in a database holding
`items (id int primary key, name text, price numeric, tags text[])`.
Prints one `ok:` line per check; any failure raises (exit status 1).
"""

import datetime
import decimal
import os
import uuid

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb

URL = os.environ["DATABASE_URL"]


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


if __name__ == "__main__":
    main()
