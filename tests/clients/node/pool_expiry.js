// node-postgres Pool across a grant's expiry.
//
// Run by tests/pools.rs like sqlalchemy_pool.py: DATABASE_URL without
// credentials, grants asked from the admin API (ADMIN_URL, ADMIN_TOKEN),
// the pool's `password` a function returning the current grant's. Checks
// that idle pooled clients ended at expiry surface as the pool's `error`
// event with SQLSTATE 57P01, a new client with the old grant is refused
// (28P01), and a fresh grant makes the same Pool work again.
"use strict";

const assert = require("node:assert/strict");
const pg = require("pg");
const { parse } = require("pg-connection-string");

const { DATABASE_URL, ADMIN_URL, ADMIN_TOKEN } = process.env;

function ok(what) {
  console.log(`ok: ${what}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function issue(ttl) {
  const r = await fetch(`${ADMIN_URL}/v1/grants`, {
    method: "POST",
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ identity: "alice", role: "writer", ttl, issued_by: "pool test" }),
  });
  const body = await r.text();
  assert.equal(r.status, 201, body);
  return JSON.parse(body);
}

async function main() {
  console.log(`node-postgres ${require("pg/package.json").version} Pool, node ${process.version}`);
  let password;
  // The URL's host, database and TLS settings; the credentials from the
  // application (a connectionString would override them with its own).
  const { user: _u, password: _p, ...target } = parse(DATABASE_URL);
  const pool = new pg.Pool({ ...target, user: "alice", password: async () => password, max: 2 });
  const poolErrors = [];
  pool.on("error", (e) => poolErrors.push(e));

  let g = await issue("3s");
  password = g.password;
  const expires = Date.now() + 3000;
  const [a, b] = await Promise.all([pool.connect(), pool.connect()]);
  assert.equal((await a.query("SELECT 1 AS x")).rows[0].x, 1);
  await b.query("INSERT INTO items (id, name) VALUES (1, 'before')");
  a.release();
  b.release();
  assert.equal(pool.idleCount, 2);
  ok(`a Pool of 2 in use with grant ${g.id}`);

  await sleep(expires - Date.now());
  // The firewall ends them within about a second of the expiry.
  for (let i = 0; i < 100 && poolErrors.length < 2; i++) await sleep(100);
  assert.equal(poolErrors.length, 2, `pool errors: ${poolErrors}`);
  for (const e of poolErrors) {
    assert.equal(e.code, "57P01", e.message);
    assert.match(e.message, /expired/);
  }
  assert.equal(pool.idleCount, 0, "ended clients left in the pool");
  ok("idle pooled clients ended at expiry: the pool's error event, FATAL 57P01, removed from the pool");

  await assert.rejects(pool.query("SELECT 1"), { code: "28P01" });
  ok("a new client with the expired grant is refused (28P01)");

  g = await issue("60s");
  password = g.password;
  await pool.query("INSERT INTO items (id, name) VALUES (2, 'after')");
  const r = await pool.query("SELECT array_agg(id ORDER BY id) AS ids FROM items");
  assert.deepEqual(r.rows[0].ids, [1, 2]);
  await pool.end();
  ok(`with a fresh grant (${g.id}) the same Pool works again`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
