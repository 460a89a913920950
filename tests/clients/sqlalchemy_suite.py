"""SQLAlchemy 2 on psycopg 3 through the firewall, as applications use it.

Run by tests/clients.rs like psycopg_suite.py (same URL form, tables,
identities and held statements). SQLAlchemy takes the demo's URL with the
scheme `postgresql+psycopg://`; the query string (sslmode, sslrootcert)
goes to psycopg as is. Exercises reflection (SQLAlchemy's catalog queries),
Core and ORM, its QueuePool with pool_pre_ping, and streaming results.
Prints one `ok:` line per check; any failure raises (exit status 1).
"""

import decimal
import os
import re
import time

import psycopg
import sqlalchemy
from sqlalchemy import MetaData, Table, create_engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

URL = os.environ["DATABASE_URL"].replace("postgres://", "postgresql+psycopg://", 1)
AGENT_URL = os.environ["AGENT_URL"].replace("postgres://", "postgresql+psycopg://", 1)


def ok(what):
    print(f"ok: {what}", flush=True)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    price: Mapped[decimal.Decimal | None]


def main():
    print(f"SQLAlchemy {sqlalchemy.__version__} on psycopg {psycopg.__version__}", flush=True)
    assert sqlalchemy.__version__.startswith("2."), sqlalchemy.__version__
    engine = create_engine(URL, pool_size=3, pool_pre_ping=True)
    with engine.connect() as conn:
        assert conn.connection.driver_connection.info.pgconn.ssl_in_use, "not TLS"
        ok("connect with the demo's URL (postgresql+psycopg://), TLS verified")
    reflection(engine)
    core(engine)
    orm(engine)
    errors_then_work(engine)
    prepared_reuse(engine)
    streaming(engine)
    held_wait(engine)
    engine.dispose()
    held_defer()


def reflection(engine):
    md = MetaData()
    items = Table("items", md, autoload_with=engine)
    assert [c.name for c in items.columns] == ["id", "name", "price", "tags"], items.columns
    assert sorted(sqlalchemy.inspect(engine).get_table_names()) == ["held", "items"]
    ok("reflection: a table's columns and the schema's tables")


def core(engine):
    md = MetaData()
    items = Table("items", md, autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(
            insert(items),
            [{"id": i, "name": f"core {i}", "price": decimal.Decimal(i) / 4, "tags": ["a"]} for i in range(1, 201)],
        )
    with engine.connect() as conn:
        total = conn.execute(select(func.sum(items.c.price)).where(items.c.id <= 200)).scalar_one()
        assert total == sum(decimal.Decimal(i) / 4 for i in range(1, 201)), total
        row = conn.execute(
            text("SELECT CAST(:i AS int) AS i, CAST(:t AS text) AS t, CAST(:b AS bytea) AS b, CAST(:a AS int[]) AS a"),
            {"i": 7, "t": "ünïcödé", "b": b"\x00\xff", "a": [1, 2]},
        ).one()
        assert tuple(row) == (7, "ünïcödé", b"\x00\xff", [1, 2]), row
    ok("Core: executemany insert, an aggregate, bound parameters and types")


def orm(engine):
    with Session(engine) as s:
        s.add(Item(id=1000, name="orm kept", price=decimal.Decimal("1.25")))
        s.commit()
    with Session(engine) as s:
        s.add(Item(id=1001, name="orm rolled back"))
        s.flush()
        s.rollback()
    with Session(engine) as s:
        kept = s.scalars(select(Item).where(Item.id >= 1000).order_by(Item.id)).all()
        assert [(i.id, i.name) for i in kept] == [(1000, "orm kept")], kept
        kept[0].price = decimal.Decimal("2.50")
        s.commit()
        assert s.get(Item, 1000).price == decimal.Decimal("2.50")
    ok("ORM: add and commit, flush and rollback, load, update")


def errors_then_work(engine):
    with Session(engine) as s:
        s.add(Item(id=1000, name="duplicate"))
        try:
            s.commit()
            raise AssertionError("duplicate key accepted")
        except IntegrityError as e:
            assert e.orig.sqlstate == "23505", e.orig.sqlstate
            s.rollback()
        assert s.scalar(select(func.count()).select_from(Item)) == 201
    with engine.connect() as conn:
        try:
            conn.execute(text("SET ROLE postgres"))
            raise AssertionError("SET ROLE ran")
        except DBAPIError as e:
            assert e.orig.sqlstate == "42501", e.orig.sqlstate
            conn.rollback()
        assert conn.execute(text("SELECT 3")).scalar_one() == 3
    ok("an error (PostgreSQL's, the firewall's), rollback, then a working statement")


def prepared_reuse(engine):
    with engine.connect() as conn:
        for i in range(1, 11):  # psycopg prepares on the 5th execution
            assert conn.execute(text("SELECT name FROM items WHERE id = :i"), {"i": i}).scalar_one() == f"core {i}"
        n = conn.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar_one()
        assert n >= 1, n
    ok(f"a statement run 10 times is prepared by psycopg and reused ({n} prepared)")


def streaming(engine):
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=5000).execute(
            text("SELECT g FROM generate_series(1, 100000) g")
        )
        n = total = 0
        for (g,) in result:
            n += 1
            total += g
    assert (n, total) == (100000, 100000 * 100001 // 2), (n, total)
    ok("stream_results (a server-side cursor) over 100000 rows")


def held_wait(engine):
    with engine.begin() as conn:
        assert conn.execute(text("DELETE FROM held")).rowcount == 10
    ok("a held DELETE waits for its approval, then runs and commits (wait mode)")


def held_defer():
    engine = create_engine(AGENT_URL, isolation_level="AUTOCOMMIT")
    stmt = text("INSERT INTO held (id, v) VALUES (:id, :v)")
    args = {"id": 100, "v": "deferred"}
    with engine.connect() as conn:
        try:
            conn.execute(stmt, args)
            raise AssertionError("a deferred write ran at once")
        except DBAPIError as e:
            assert e.orig.sqlstate == "42501", e.orig.sqlstate
            m = re.search(r"approval request (a-[0-9a-f]+)", e.orig.diag.message_primary)
            assert m, e.orig.diag.message_primary
        for _ in range(100):
            try:
                conn.execute(stmt, args)
                break
            except DBAPIError as e:
                assert e.orig.sqlstate == "42501", e.orig.sqlstate
                time.sleep(0.2)  # not approved yet
        else:
            raise AssertionError("never approved")
        assert conn.execute(text("SELECT v FROM held WHERE id = 100")).scalar_one() == "deferred"
    engine.dispose()
    ok(f"a deferred INSERT refused with its approval id ({m.group(1)}), run once approved")


if __name__ == "__main__":
    main()
