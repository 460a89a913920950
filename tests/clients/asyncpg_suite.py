"""asyncpg through the firewall, as its users drive it every day.

Run by tests/clients.rs like psycopg_suite.py (same URL form, role and
`items` table). asyncpg always uses the extended protocol with named,
cached prepared statements and binary results, and sends
client_encoding='utf-8' at start-up. Prints one `ok:` line per check; any
failure raises (exit status 1).
"""

import asyncio
import datetime
import decimal
import os
import uuid

import asyncpg

URL = os.environ["DATABASE_URL"]


def ok(what):
    print(f"ok: {what}", flush=True)


async def main():
    print(f"asyncpg {asyncpg.__version__}", flush=True)
    conn = await asyncpg.connect(URL)
    try:
        assert conn._transport.get_extra_info("ssl_object") is not None, "not TLS"
        assert conn.get_settings().client_encoding == "UTF8"
        ok("connect with the demo's URL, TLS verified")
        await types(conn)
        await transactions(conn)
        await errors_then_work(conn)
        await copy_in_and_out(conn)
        await prepared_reuse(conn)
    finally:
        await conn.close()


async def types(conn):
    values = (
        42,
        "ünïcödé ✓",
        decimal.Decimal("12345.6789"),
        datetime.datetime(2026, 12, 1, 12, 30, tzinfo=datetime.timezone.utc),
        datetime.date(2026, 2, 28),
        b"\x00\x01\xfe\xff",
        '{"a": [1, 2, null], "b": "x"}',
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        [1, 2, 3],
        None,
        True,
        1.5,
    )
    row = await conn.fetchrow(
        "SELECT $1::int, $2::text, $3::numeric, $4::timestamptz, $5::date, $6::bytea,"
        " $7::jsonb, $8::uuid, $9::int[], $10::text, $11::bool, $12::float8",
        *values,
    )
    got = list(row)
    assert got[6] == '{"a": [1, 2, null], "b": "x"}', got[6]
    assert got == list(values), got
    ok("parameters and types round trip (binary)")


async def transactions(conn):
    async with conn.transaction():
        await conn.execute("INSERT INTO items (id, name) VALUES (1, 'kept')")
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO items (id, name) VALUES (2, 'rolled back')")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    async with conn.transaction():
        await conn.execute("INSERT INTO items (id, name) VALUES (3, 'savepoint outer')")
        try:
            async with conn.transaction():  # a savepoint
                await conn.execute("INSERT INTO items (id, name) VALUES (4, 'savepoint inner')")
                await conn.execute("SELECT 1/0")
        except asyncpg.DivisionByZeroError:
            pass
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM items ORDER BY id")]
    assert ids == [1, 3], ids
    ok("transactions: commit, rollback, a savepoint rolled back inside")


async def errors_then_work(conn):
    try:
        await conn.fetchval("SELECT 1/0")
        raise AssertionError("no error")
    except asyncpg.DivisionByZeroError as e:
        assert e.sqlstate == "22012"
    assert await conn.fetchval("SELECT 2") == 2
    try:
        await conn.execute("SET ROLE postgres")
        raise AssertionError("SET ROLE ran")
    except asyncpg.InsufficientPrivilegeError as e:
        assert e.sqlstate == "42501"
        assert "privileged" in str(e), str(e)
    assert await conn.fetchval("SELECT 3") == 3
    # The same refusal through a prepared statement (extended protocol).
    try:
        await conn.fetchval("SELECT set_config('role', 'postgres', false)")
        raise AssertionError("set_config ran")
    except asyncpg.InsufficientPrivilegeError:
        pass
    assert await conn.fetchval("SELECT $1::int + 1", 3) == 4
    ok("an error, then a working statement (PostgreSQL's and the firewall's errors)")


async def copy_in_and_out(conn):
    rows = [(100 + i, f"copied {i}", decimal.Decimal(i) / 4, ["a", f"t{i}"]) for i in range(500)]
    result = await conn.copy_records_to_table(
        "items", records=rows, columns=["id", "name", "price", "tags"]
    )
    assert result == "COPY 500", result
    chunks = []

    async def sink(data):
        chunks.append(data)

    await conn.copy_from_query(
        "SELECT id, name FROM items WHERE id >= 100 AND id < 103 ORDER BY id", output=sink
    )
    text = b"".join(chunks).decode()
    assert text == "100\tcopied 0\n101\tcopied 1\n102\tcopied 2\n", text
    back = await conn.fetch("SELECT id, name, price, tags FROM items WHERE id >= 100 ORDER BY id")
    assert [tuple(r) for r in back] == rows, back[:3]
    ok("COPY in (binary records) and out (text)")


async def prepared_reuse(conn):
    stmt = await conn.prepare("SELECT id, name FROM items WHERE id = $1")
    for i in range(100, 120):
        row = await stmt.fetchrow(i)
        assert tuple(row) == (i, f"copied {i - 100}"), row
    # asyncpg's own statement cache: the same text reuses one statement.
    for i in range(5):
        assert await conn.fetchval("SELECT name FROM items WHERE id = $1", 100 + i) == f"copied {i}"
    names = await conn.fetch(
        "SELECT name FROM pg_prepared_statements WHERE statement LIKE 'SELECT % FROM items WHERE id = $1'"
    )
    assert len(names) == 2, names
    await conn.executemany(
        "INSERT INTO items (id, name) VALUES ($1, $2)", [(7000 + i, f"many {i}") for i in range(50)]
    )
    assert await conn.fetchval("SELECT count(*) FROM items WHERE id >= 7000") == 50
    ok("prepared statements reused (explicit, cached, executemany)")


if __name__ == "__main__":
    asyncio.run(main())
