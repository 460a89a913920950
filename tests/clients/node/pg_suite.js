// node-postgres through the firewall, as its users drive it every day.
//
// Run by tests/clients.rs like the Python suites (same URL form, role and
// tables, the same held statements). node-postgres reads sslmode=require as verify-full, which
// is why the demo prints verify-full with sslrootcert; this connects with
// that URL unmodified. Prints one `ok:` line per check; any failure exits 1.
"use strict";

const assert = require("node:assert/strict");
const pg = require("pg");
const Cursor = require("pg-cursor");

const URL = process.env.DATABASE_URL;
const AGENT_URL = process.env.AGENT_URL;

function ok(what) {
  console.log(`ok: ${what}`);
}

async function main() {
  console.log(`node-postgres ${require("pg/package.json").version}, node ${process.version}`);
  const client = new pg.Client({ connectionString: URL });
  await client.connect();
  try {
    assert.ok(client.connection.stream.encrypted, "not TLS");
    ok("connect with the demo's URL, TLS verified");
    await types(client);
    await transactions(client);
    await errorsThenWork(client);
    await preparedReuse(client);
    await serverSideCursor(client);
    await largeBytea(client);
    await listenNotify(client);
    await cancel(client);
    await heldWait(client);
  } finally {
    await client.end();
  }
  await pool();
  await pipelineAndBinary();
  await heldDefer();
}

async function types(c) {
  const r = await c.query(
    "SELECT $1::int AS i, $2::text AS t, $3::numeric AS n, $4::timestamptz AS ts," +
      " $5::bytea AS b, $6::jsonb AS j, $7::uuid AS u, $8::int[] AS a, $9::text AS nul," +
      " $10::bool AS bo, $11::float8 AS f",
    [
      42,
      "ünïcödé ✓",
      "12345.6789",
      new Date("2026-12-01T12:30:00Z"),
      Buffer.from([0, 1, 0xfe, 0xff]),
      JSON.stringify({ a: [1, 2, null], b: "x" }),
      "12345678-1234-5678-1234-567812345678",
      [1, 2, 3],
      null,
      true,
      1.5,
    ],
  );
  const row = r.rows[0];
  assert.equal(row.i, 42);
  assert.equal(row.t, "ünïcödé ✓");
  assert.equal(row.n, "12345.6789");
  assert.equal(row.ts.toISOString(), "2026-12-01T12:30:00.000Z");
  assert.deepEqual([...row.b], [0, 1, 0xfe, 0xff]);
  assert.deepEqual(row.j, { a: [1, 2, null], b: "x" });
  assert.equal(row.u, "12345678-1234-5678-1234-567812345678");
  assert.deepEqual(row.a, [1, 2, 3]);
  assert.equal(row.nul, null);
  assert.equal(row.bo, true);
  assert.equal(row.f, 1.5);
  ok("parameters and types round trip");
}

async function transactions(c) {
  await c.query("BEGIN");
  await c.query("INSERT INTO items (id, name) VALUES (1, 'kept')");
  await c.query("COMMIT");
  await c.query("BEGIN");
  await c.query("INSERT INTO items (id, name) VALUES (2, 'rolled back')");
  await c.query("ROLLBACK");
  await c.query("BEGIN");
  await c.query("INSERT INTO items (id, name) VALUES (3, 'savepoint outer')");
  await c.query("SAVEPOINT s");
  await c.query("INSERT INTO items (id, name) VALUES (4, 'savepoint inner')");
  await assert.rejects(c.query("SELECT 1/0"), { code: "22012" });
  await c.query("ROLLBACK TO SAVEPOINT s");
  await c.query("COMMIT");
  const ids = (await c.query("SELECT id FROM items ORDER BY id")).rows.map((r) => r.id);
  assert.deepEqual(ids, [1, 3]);
  ok("transactions: commit, rollback, a savepoint rolled back inside");
}

async function errorsThenWork(c) {
  await assert.rejects(c.query("SELECT 1/0"), { code: "22012" });
  assert.equal((await c.query("SELECT 2 AS x")).rows[0].x, 2);
  // The firewall's own refusal, simple and extended protocol.
  await assert.rejects(c.query("SET ROLE postgres"), (e) => {
    assert.equal(e.code, "42501");
    assert.match(e.message, /privileged/);
    return true;
  });
  await assert.rejects(c.query("SELECT set_config('role', $1, false)", ["postgres"]), {
    code: "42501",
  });
  assert.equal((await c.query("SELECT $1::int + 1 AS x", [3])).rows[0].x, 4);
  ok("an error, then a working statement (PostgreSQL's and the firewall's errors)");
}

async function preparedReuse(c) {
  await c.query("INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(100, 119) g");
  for (let i = 100; i < 120; i++) {
    const r = await c.query({
      name: "item-by-id",
      text: "SELECT id, name FROM items WHERE id = $1",
      values: [i],
    });
    assert.deepEqual(r.rows, [{ id: i, name: `n${i}` }]);
  }
  const names = await c.query("SELECT name FROM pg_prepared_statements");
  assert.deepEqual(
    names.rows.map((r) => r.name),
    ["item-by-id"],
  );
  ok("a named prepared statement reused 20 times");
}

async function pool() {
  const p = new pg.Pool({ connectionString: URL, max: 3 });
  const counts = await Promise.all(
    Array.from({ length: 12 }, (_, i) => p.query("SELECT $1::int AS i", [i])),
  );
  assert.deepEqual(
    counts.map((r) => r.rows[0].i),
    Array.from({ length: 12 }, (_, i) => i),
  );
  await p.end();
  ok("a Pool of 3 connections serving 12 queries");
}

async function serverSideCursor(c) {
  // pg-cursor: one portal, Execute with a row limit and Flush, no Sync
  // until the end (so outside a transaction block too).
  const cursor = c.query(new Cursor("SELECT g, md5(g::text) FROM generate_series(1, $1) g", [100000]));
  let n = 0;
  let total = 0;
  for (;;) {
    const rows = await cursor.read(5000);
    if (rows.length === 0) break;
    n += rows.length;
    for (const r of rows) total += r.g;
  }
  await cursor.close();
  assert.deepEqual([n, total], [100000, (100000 * 100001) / 2]);
  assert.equal((await c.query("SELECT 1 AS x")).rows[0].x, 1);
  ok("a cursor (pg-cursor) over 100000 rows, 5000 per read");
}

async function largeBytea(c) {
  const data = require("node:crypto").randomBytes(8 * 1024 * 1024);
  const r = await c.query("SELECT $1::bytea AS b, length($1::bytea) AS n", [data]);
  assert.equal(r.rows[0].n, data.length);
  assert.ok(r.rows[0].b.equals(data), "the bytea came back changed");
  ok("an 8 MB bytea there and back");
}

async function listenNotify(c) {
  const listener = new pg.Client({ connectionString: URL });
  await listener.connect();
  try {
    const seen = [];
    const both = new Promise((resolve) => {
      listener.on("notification", (n) => {
        seen.push([n.channel, n.payload]);
        if (seen.length === 2) resolve();
      });
    });
    await listener.query("LISTEN infraveil_chan");
    await c.query("NOTIFY infraveil_chan, 'one'");
    await c.query("SELECT pg_notify('infraveil_chan', $1)", ["two"]);
    // The listener is idle: the notifications arrive on their own.
    await Promise.race([
      both,
      new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${JSON.stringify(seen)}`)), 10000)),
    ]);
    assert.deepEqual(seen, [
      ["infraveil_chan", "one"],
      ["infraveil_chan", "two"],
    ]);
  } finally {
    await listener.end();
  }
  ok("LISTEN, NOTIFY and pg_notify, delivered to an idle listener");
}

async function cancel(c) {
  const started = Date.now();
  const query = new pg.Query("SELECT pg_sleep(30)");
  const sleeping = new Promise((resolve, reject) => {
    query.on("end", resolve);
    query.on("error", reject);
  });
  c.query(query);
  await new Promise((r) => setTimeout(r, 500));
  // node-postgres cancels through a second Client with the same config,
  // which sends the CancelRequest (over TLS, as the URL says).
  const canceller = new pg.Client({ connectionString: URL });
  canceller.cancel(c, query);
  await assert.rejects(sleeping, { code: "57014" });
  assert.equal((await c.query("SELECT 6 AS x")).rows[0].x, 6);
  assert.ok(Date.now() - started < 10000, "the query was not cancelled on the server");
  ok("a running pg_sleep cancelled (Client.cancel), then a working statement");
}

async function heldWait(c) {
  // DELETE without WHERE is destructive: held until approved (wait mode).
  const r = await c.query("DELETE FROM held");
  assert.equal(r.rowCount, 10);
  ok("a held DELETE waits for its approval, then runs (wait mode)");
}

async function pipelineAndBinary() {
  // pipeline: every query is sent at once, each with its own Sync, so an
  // error fails only its own query; binary: results in binary format.
  const c = new pg.Client({ connectionString: URL, pipeline: true, binary: true });
  await c.connect();
  try {
    const all = [];
    for (let i = 0; i < 40; i++) {
      all.push(i === 20 ? c.query("SELECT 1/$1::int AS x", [0]) : c.query("SELECT $1::int AS x, $2::text AS t", [i, `p${i}`]));
    }
    const settled = await Promise.allSettled(all);
    settled.forEach((r, i) => {
      if (i === 20) {
        assert.equal(r.status, "rejected");
        assert.equal(r.reason.code, "22012");
      } else {
        assert.equal(r.status, "fulfilled", String(r.reason));
        assert.deepEqual(r.value.rows, [{ x: i, t: `p${i}` }]);
      }
    });
    ok("pipeline mode: 40 queries in flight, one error failing only itself; binary results");
  } finally {
    await c.end();
  }
}

async function heldDefer() {
  const agent = new pg.Client({ connectionString: AGENT_URL });
  await agent.connect();
  let id;
  try {
    const q = ["INSERT INTO held (id, v) VALUES ($1, $2)", [100, "deferred"]];
    await assert.rejects(agent.query(...q), (e) => {
      assert.equal(e.code, "42501");
      id = /approval request (a-[0-9a-f]+)/.exec(e.message)?.[1];
      assert.ok(id, e.message);
      assert.ok((e.hint || "").includes(id), e.hint);
      return true;
    });
    let done = false;
    for (let i = 0; i < 100 && !done; i++) {
      try {
        assert.equal((await agent.query(...q)).rowCount, 1);
        done = true;
      } catch (e) {
        if (e.code !== "42501") throw e;
        await new Promise((r) => setTimeout(r, 200)); // not approved yet
      }
    }
    assert.ok(done, "never approved");
    const r = await agent.query("SELECT v FROM held WHERE id = 100");
    assert.deepEqual(r.rows, [{ v: "deferred" }]);
  } finally {
    await agent.end();
  }
  ok(`a deferred INSERT refused with its approval id (${id}), run once approved`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
