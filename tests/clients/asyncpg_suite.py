"""asyncpg through the firewall, as its users drive it every day.

Run by tests/clients.rs like psycopg_suite.py (same URL form, role and
tables, the same held statements). asyncpg always uses the extended protocol with named,
cached prepared statements and binary results, and sends
client_encoding='utf-8' at start-up. Prints one `ok:` line per check; any
failure raises (exit status 1).
"""

import asyncio
import datetime
import decimal
import os
import re
import time
import uuid

import asyncpg

URL = os.environ["DATABASE_URL"]
AGENT_URL = os.environ["AGENT_URL"]


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
        await server_side_cursor(conn)
        await large_bytea(conn)
        await listen_notify(conn)
        await cancel(conn)
        await held_wait(conn)
    finally:
        await conn.close()
    await held_defer()


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


async def server_side_cursor(conn):
    # A portal fetched `prefetch` rows per Execute (PortalSuspended between).
    n = total = 0
    async with conn.transaction():
        async for r in conn.cursor("SELECT g, md5(g::text) FROM generate_series(1, $1) g", 100000, prefetch=5000):
            n += 1
            total += r[0]
        # And one moved by hand: forward, then fetch.
        cur = await conn.cursor("SELECT g FROM generate_series(1, 100000) g")
        await cur.forward(99990)
        tail = [r[0] for r in await cur.fetch(20)]
    assert (n, total) == (100000, 100000 * 100001 // 2), (n, total)
    assert tail == list(range(99991, 100001)), tail
    ok("a cursor over 100000 rows, 5000 per Execute; forward and fetch")


async def large_bytea(conn):
    data = os.urandom(8 * 1024 * 1024)
    back, n = await conn.fetchrow("SELECT $1::bytea, length($1::bytea)", data)
    assert (back, n) == (data, len(data)), (len(back), n)
    ok("an 8 MB bytea there and back")


async def listen_notify(conn):
    listener = await asyncpg.connect(URL)
    try:
        got = asyncio.Queue()
        await listener.add_listener("infraveil_chan", lambda _c, _pid, ch, payload: got.put_nowait((ch, payload)))
        await conn.execute("NOTIFY infraveil_chan, 'one'")
        await conn.execute("SELECT pg_notify('infraveil_chan', $1)", "two")
        # The listener is idle: the notifications arrive on their own.
        seen = [await asyncio.wait_for(got.get(), 10) for _ in range(2)]
        assert seen == [("infraveil_chan", "one"), ("infraveil_chan", "two")], seen
    finally:
        await listener.close()
    ok("LISTEN, NOTIFY and pg_notify, delivered to an idle listener")


async def cancel(conn):
    started = time.monotonic()
    try:
        # On timeout asyncpg sends a CancelRequest and waits for the answer.
        await conn.execute("SELECT pg_sleep(30)", timeout=0.5)
        raise AssertionError("pg_sleep ran to its end")
    except asyncio.TimeoutError:
        pass
    assert await conn.fetchval("SELECT 6") == 6
    assert time.monotonic() - started < 10, "the query was not cancelled on the server"
    # A task cancelled by the application cancels its query too.
    task = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(30)"))
    await asyncio.sleep(0.5)
    task.cancel()
    try:
        await task
        raise AssertionError("pg_sleep ran to its end")
    except asyncio.CancelledError:
        pass
    assert await conn.fetchval("SELECT 7") == 7
    assert time.monotonic() - started < 20, "the query was not cancelled on the server"
    ok("a running pg_sleep cancelled (timeout, task.cancel()), then a working statement")


async def held_wait(conn):
    # DELETE without WHERE is destructive: held until approved (wait mode).
    assert await conn.execute("DELETE FROM held") == "DELETE 10"
    ok("a held DELETE waits for its approval, then runs (wait mode)")


async def held_defer():
    agent = await asyncpg.connect(AGENT_URL)
    try:
        sql = "INSERT INTO held (id, v) VALUES ($1, $2)"
        try:
            await agent.execute(sql, 100, "deferred")
            raise AssertionError("a deferred write ran at once")
        except asyncpg.InsufficientPrivilegeError as e:
            assert e.sqlstate == "42501"
            m = re.search(r"approval request (a-[0-9a-f]+)", e.message)
            assert m, e.message
            assert m.group(1) in (e.hint or ""), e.hint
        for _ in range(100):
            try:
                assert await agent.execute(sql, 100, "deferred") == "INSERT 0 1"
                break
            except asyncpg.InsufficientPrivilegeError:
                await asyncio.sleep(0.2)  # not approved yet
        else:
            raise AssertionError("never approved")
        assert await agent.fetchval("SELECT v FROM held WHERE id = 100") == "deferred"
    finally:
        await agent.close()
    ok(f"a deferred INSERT refused with its approval id ({m.group(1)}), run once approved")


if __name__ == "__main__":
    asyncio.run(main())
