"""psycopg 3 through the firewall with pgbouncer (transaction mode) behind it.

Run by tests/pools.rs with DATABASE_URL (plain TCP, alice in role
deployer, a database holding `items (id int primary key, name text)`).
pgbouncer gives every transaction whichever server connection is free, so
this uses the extended protocol the way such setups must: unnamed
statements only (prepare_threshold=None). Prints one `ok:` line per check;
any failure raises (exit status 1).
"""

import os

import psycopg
from psycopg import errors

URL = os.environ["DATABASE_URL"]


def ok(what):
    print(f"ok: {what}", flush=True)


def main():
    print(f"psycopg {psycopg.__version__} through pgbouncer", flush=True)
    with psycopg.connect(URL, autocommit=True, prepare_threshold=None) as conn:
        for i in range(100, 130):  # each its own transaction, on any server connection
            row = conn.execute("INSERT INTO items VALUES (%s, %s) RETURNING id, name", (i, f"b{i}")).fetchone()
            assert row == (i, f"b{i}"), row
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO items VALUES (%s, %s)", [(200 + i, "many") for i in range(20)])
        with conn.transaction():
            conn.execute("INSERT INTO items VALUES (%s, %s)", (300, "kept"))
        try:
            with conn.transaction():
                conn.execute("INSERT INTO items VALUES (%s, %s)", (301, "rolled back"))
                conn.execute("SELECT 1/0")
        except errors.DivisionByZero:
            pass
        try:
            conn.execute("SELECT set_config('role', %s, false)", ("postgres",))
            raise AssertionError("set_config ran")
        except errors.InsufficientPrivilege:
            pass
        with conn.cursor(binary=True) as cur:
            n = cur.execute("SELECT count(*) FROM items WHERE id >= %s", (100,)).fetchone()[0]
        assert n == 51, n
    ok("extended protocol with unnamed statements: params, executemany, a transaction rolled back, a refusal, binary results")


if __name__ == "__main__":
    main()
