"""SQLAlchemy's QueuePool (pool_pre_ping) across a grant's expiry.

Run by tests/pools.rs against a firewall that admits identities with
grants only. DATABASE_URL is the demo's URL form without credentials;
the script asks the admin API (ADMIN_URL, ADMIN_TOKEN) for grants itself,
as a deploy job would, and hands the pool the current grant's password
when it opens a connection. What it checks:
- a session that outlives its grant gets a clean FATAL (SQLSTATE 57P01)
  and SQLAlchemy invalidates the pool;
- a new connection with the expired grant is refused with 28P01;
- with a fresh grant the same engine works again, without a restart.
Prints one `ok:` line per check; any failure raises (exit status 1).
"""

import json
import os
import time
import urllib.request

import sqlalchemy
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import DBAPIError

URL = os.environ["DATABASE_URL"].replace("postgres://", "postgresql+psycopg://", 1)
ADMIN_URL = os.environ["ADMIN_URL"]
ADMIN_TOKEN = os.environ["ADMIN_TOKEN"]


def ok(what):
    print(f"ok: {what}", flush=True)


def issue(ttl):
    """A grant for alice in role writer; returns (id, password)."""
    body = json.dumps({"identity": "alice", "role": "writer", "ttl": ttl, "issued_by": "pool test"})
    req = urllib.request.Request(
        f"{ADMIN_URL}/v1/grants",
        data=body.encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        g = json.load(r)
    return g["id"], g["password"], time.monotonic() + float(ttl.rstrip("s"))


def main():
    print(f"SQLAlchemy {sqlalchemy.__version__} QueuePool", flush=True)
    current = {}
    engine = create_engine(URL, pool_size=2, max_overflow=0, pool_pre_ping=True)

    @event.listens_for(engine, "do_connect")
    def credentials(dialect, conn_rec, cargs, cparams):
        cparams["user"] = "alice"
        cparams["password"] = current["password"]

    gid, current["password"], expires = issue("3s")
    # Two pooled connections in use, then idle in the pool.
    with engine.connect() as a, engine.connect() as b:
        assert a.execute(text("SELECT 1")).scalar_one() == 1
        assert b.execute(text("INSERT INTO items (id, name) VALUES (1, 'before') RETURNING id")).scalar_one() == 1
        b.commit()
    assert engine.pool.checkedin() == 2, engine.pool.status()
    ok(f"a pool of 2 in use with grant {gid}")

    # One held across the expiry, inside a transaction.
    held = engine.connect()
    held.execute(text("INSERT INTO items (id, name) VALUES (2, 'lost with the grant')"))
    time.sleep(max(0, expires - time.monotonic()) + 2.5)  # ended within about a second
    try:
        held.execute(text("SELECT 1"))
        raise AssertionError("the session outlived its grant")
    except DBAPIError as e:
        assert e.connection_invalidated, "SQLAlchemy did not see a disconnect"
        assert e.orig.sqlstate == "57P01", (e.orig.sqlstate, str(e.orig))
        assert "expired" in str(e.orig), str(e.orig)
    held.close()
    ok("a session at expiry ends with FATAL 57P01 (grant expired); SQLAlchemy invalidates it")

    # pre_ping finds the idle ones dead; a new one with the old grant is refused.
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        raise AssertionError("connected with an expired grant")
    except DBAPIError as e:
        # libpq gives no SQLSTATE for a failed connection: the message.
        assert "password authentication failed" in str(e.orig), str(e.orig)
        assert "grant expired" in str(e.orig), str(e.orig)
    ok("a new connection with the expired grant is refused (password authentication failed)")

    gid2, current["password"], _ = issue("60s")
    with engine.connect() as a, engine.connect() as b:
        assert a.execute(text("SELECT count(*) FROM items")).scalar_one() == 1  # the uncommitted row is gone
        b.execute(text("INSERT INTO items (id, name) VALUES (3, 'after')"))
        b.commit()
    with engine.connect() as c:
        assert c.execute(text("SELECT array_agg(id ORDER BY id) FROM items")).scalar_one() == [1, 3]
    engine.dispose()
    ok(f"with a fresh grant ({gid2}) the same engine works again")


if __name__ == "__main__":
    main()
