// node-postgres through the firewall, as its users drive it every day.
//
// Run by tests/clients.rs like the Python suites (same URL form, role and
// `items` table). node-postgres reads sslmode=require as verify-full, which
// is why the demo prints verify-full with sslrootcert; this connects with
// that URL unmodified. Prints one `ok:` line per check; any failure exits 1.
"use strict";

const assert = require("node:assert/strict");
const pg = require("pg");

const URL = process.env.DATABASE_URL;

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
  } finally {
    await client.end();
  }
  await pool();
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

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
