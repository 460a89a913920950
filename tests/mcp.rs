//! `infraveil mcp` end to end: the real binary, driven over stdio by a
//! scripted JSON-RPC (MCP) session, in front of `infraveil serve` with the
//! example policies and the sample schema (`orders`), as `ops-agent` in role
//! `agent` (reads allowed; writes and destructive statements held in
//! `defer` mode for `oncall`). Covers the "Done means": initialize,
//! tools, a read, a denied privileged statement, `propose` of `DELETE FROM
//! orders`, approval through the admin API, `status`, the approved `query`
//! running once and a second run held again, each step in the audit log
//! under the agent's identity; and the lifecycle: a grant expiring
//! mid-session, cancelling a running query, JSON-safe values.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::child::Firewall;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SAMPLE_SCHEMA: &str = include_str!("../testdata/sample_schema.sql");

/// A database with the demo's sample schema.
fn sample_db(name: &str) -> String {
    fresh_db_with(name, SAMPLE_SCHEMA)
}

/// An `ops-agent` grant in role `agent`: (id, password).
async fn agent_grant(fw: &Firewall, ttl: &str) -> (String, String) {
    let (ok, out, err) = veilctl(
        Some(&fw.admin_url),
        &[
            "--output",
            "json",
            "grants",
            "issue",
            "--identity",
            "ops-agent",
            "--role",
            "agent",
            "--ttl",
            ttl,
        ],
    )
    .await;
    assert!(ok, "grant: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["password"].as_str().unwrap().to_owned(),
    )
}

fn agent_url(fw: &Firewall, db: &str, password: &str) -> String {
    let mut u = url::Url::parse(&format!(
        "postgres://127.0.0.1:{}/{db}?sslmode=disable",
        fw.pg_port
    ))
    .unwrap();
    u.set_username("ops-agent").unwrap();
    u.set_password(Some(password)).unwrap();
    u.to_string()
}

/// An MCP client session with `infraveil mcp` over its stdin/stdout.
struct Mcp {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    next_id: u64,
}

impl Mcp {
    async fn start(fw: &Firewall, url: &str) -> Mcp {
        // The URL from the environment, as agent runtimes pass it.
        Mcp::start_with(fw, &[], Some(url)).await
    }

    async fn start_with(fw: &Firewall, args: &[&str], url: Option<&str>) -> Mcp {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_infraveil"));
        cmd.args(["mcp", "--admin-url", &fw.admin_url]).args(args);
        match url {
            Some(u) => cmd.env("DATABASE_URL", u),
            None => cmd.env_remove("DATABASE_URL"),
        };
        let mut child = cmd
            .env("INFRAVEIL_LOG", "info,rmcp=warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn infraveil mcp");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut m = Mcp {
            child,
            stdin,
            lines,
            next_id: 1,
        };
        let init = m
            .request(
                "initialize",
                json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "infraveil-test", "version": "1"}
                }),
            )
            .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "infraveil", "{init}");
        assert!(
            init["result"]["capabilities"]["tools"].is_object(),
            "{init}"
        );
        assert!(
            init["result"]["capabilities"]["resources"].is_object(),
            "{init}"
        );
        m.notify("notifications/initialized", json!({})).await;
        m
    }

    async fn send(&mut self, msg: &Value) {
        let mut line = serde_json::to_vec(msg).unwrap();
        line.push(b'\n');
        self.stdin.write_all(&line).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await;
    }

    /// Send a request; returns its id without waiting.
    async fn start_request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        id
    }

    /// The response to request `id` (notifications and other responses
    /// in between are skipped).
    async fn response(&mut self, id: u64) -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(120), self.lines.next_line())
                .await
                .expect("infraveil mcp answered in time")
                .unwrap()
                .expect("infraveil mcp closed stdout");
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.start_request(method, params).await;
        self.response(id).await
    }

    /// Call a tool: (is_error, structured content).
    async fn call(&mut self, tool: &str, args: Value) -> (bool, Value) {
        let r = self
            .request("tools/call", json!({"name": tool, "arguments": args}))
            .await;
        let result = &r["result"];
        assert!(result.is_object(), "{tool}: not a tool result: {r}");
        let structured = result["structuredContent"].clone();
        // The same JSON as text, for clients that only read content.
        let text = result["content"][0]["text"].as_str().unwrap_or("");
        assert_eq!(
            serde_json::from_str::<Value>(text).ok().as_ref(),
            Some(&structured),
            "{r}"
        );
        (result["isError"] == true, structured)
    }

    async fn ok(&mut self, tool: &str, args: Value) -> Value {
        let (err, v) = self.call(tool, args.clone()).await;
        assert!(!err, "{tool} {args} failed: {v}");
        v
    }

    async fn fails(&mut self, tool: &str, args: Value) -> Value {
        let (err, v) = self.call(tool, args.clone()).await;
        assert!(err, "{tool} {args} should have failed: {v}");
        v
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn superuser(db: &str, sql: &str) -> String {
    cluster().psql(db, sql).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reads_is_denied_proposes_and_runs_once_approved() {
    let fw = Firewall::start("50ms").await;
    let db = sample_db("mcp");
    let (grant, pw) = agent_grant(&fw, "30m").await;
    let mut mcp = Mcp::start(&fw, &agent_url(&fw, &db, &pw)).await;

    // The tools, each described with a schema.
    let tools = mcp.request("tools/list", json!({})).await;
    let tools = tools["result"]["tools"].as_array().unwrap().clone();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for t in ["query", "check", "propose", "status", "describe", "whoami"] {
        assert!(names.contains(&t), "{names:?}");
    }
    for t in &tools {
        assert!(t["description"].as_str().unwrap().len() > 60, "{t}");
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        let read_only = !matches!(t["name"].as_str(), Some("query" | "propose"));
        assert_eq!(t["annotations"]["readOnlyHint"], read_only, "{t}");
    }

    // A read runs, and returns what PostgreSQL has.
    let orders: i64 = superuser(&db, "SELECT count(*) FROM orders")
        .parse()
        .unwrap();
    assert!(orders > 0);
    let r = mcp
        .ok("query", json!({"sql": "SELECT count(*) AS n FROM orders"}))
        .await;
    assert_eq!(r["columns"][0]["name"], "n");
    assert_eq!(r["rows"][0][0], json!(orders));
    assert_eq!(r["truncated"], false);
    let r = mcp
        .ok(
            "query",
            json!({"sql": "SELECT id FROM orders ORDER BY id", "max_rows": 2}),
        )
        .await;
    assert_eq!(r["rows"].as_array().unwrap().len(), 2);
    assert_eq!(r["truncated"], true);

    // A privileged statement is denied, with the firewall's rule and reason.
    let e = mcp
        .fails("query", json!({"sql": "SET ROLE postgres"}))
        .await;
    assert_eq!(e["error"], "denied", "{e}");
    assert_eq!(e["sqlstate"], "42501");
    assert_eq!(e["class"], "privileged", "{e}");
    assert!(e["rule"].as_str().is_some_and(|r| !r.is_empty()), "{e}");
    assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()), "{e}");
    assert!(e["next"].as_str().is_some(), "{e}");

    // check: judged by the firewall, nothing runs.
    let c = mcp.ok("check", json!({"sql": "DELETE FROM orders"})).await;
    assert_eq!(c["class"], "destructive", "{c}");
    assert_eq!(c["decision"], "hold", "{c}");
    assert_eq!(c["approvers"], json!(["oncall"]), "{c}");
    let c = mcp
        .ok("check", json!({"sql": "SELECT * FROM orders"}))
        .await;
    assert_eq!(c["decision"], "allow", "{c}");
    let c = mcp.ok("check", json!({"sql": "SET ROLE postgres"})).await;
    assert_eq!(c["decision"], "deny", "{c}");
    assert_eq!(c["class"], "privileged", "{c}");
    assert_eq!(
        superuser(&db, "SELECT count(*) FROM orders"),
        orders.to_string()
    );

    // propose: the request, its approvers, preview and link; again: the same.
    let p = mcp
        .ok(
            "propose",
            json!({"sql": "DELETE FROM orders", "reason": "INC-1: clear test orders"}),
        )
        .await;
    assert_eq!(p["proposed"], true, "{p}");
    assert_eq!(p["created"], true, "{p}");
    let id = p["approval"]["id"].as_str().unwrap().to_owned();
    assert_eq!(p["approval"]["status"], "pending");
    assert_eq!(p["approval"]["approvers"], json!(["oncall"]));
    assert!(p["approval"]["link"].as_str().unwrap().contains(&id), "{p}");
    assert!(
        p["approval"]["preview"].as_array().is_some_and(|v| v
            .iter()
            .any(|l| l.as_str().unwrap_or("").contains("orders"))),
        "{p}"
    );
    assert!(
        p["approval"]["reason"].as_str().unwrap().contains("INC-1"),
        "{p}"
    );
    let again = mcp
        .ok(
            "propose",
            json!({"sql": "DELETE FROM orders", "reason": "again"}),
        )
        .await;
    assert_eq!(again["approval"]["id"], json!(id));
    assert_eq!(again["created"], false);
    assert_eq!(
        mcp.ok("status", json!({"id": id})).await["status"],
        "pending"
    );

    // Sent before approval, it is held on the same request.
    let e = mcp
        .fails("query", json!({"sql": "DELETE FROM orders"}))
        .await;
    assert_eq!(e["error"], "held", "{e}");
    assert_eq!(e["approval_id"], json!(id), "{e}");
    assert_eq!(e["class"], "destructive", "{e}");
    assert_eq!(
        superuser(&db, "SELECT count(*) FROM orders"),
        orders.to_string()
    );

    // The approver approves through the admin API.
    let (ok, _, err) = veilctl(
        Some(&fw.admin_url),
        &["approvals", "approve", &id, "--as", "oncall"],
    )
    .await;
    assert!(ok, "approve: {err}");
    let s = mcp.ok("status", json!({"id": id})).await;
    assert_eq!(s["status"], "approved", "{s}");
    assert_eq!(s["decided_by"], "oncall");

    // The identical statement runs once...
    let r = mcp.ok("query", json!({"sql": "DELETE FROM orders"})).await;
    assert_eq!(r["command"], "DELETE");
    assert_eq!(r["rows_affected"], json!(orders), "{r}");
    assert_eq!(superuser(&db, "SELECT count(*) FROM orders"), "0");
    assert_eq!(
        mcp.ok("status", json!({"id": id})).await["status"],
        "executed"
    );
    // ...and a second run is held again, on a new request.
    superuser(
        &db,
        "INSERT INTO orders (customer_id, total_cents) SELECT id, 1 FROM customers LIMIT 1",
    );
    let e = mcp
        .fails("query", json!({"sql": "DELETE FROM orders"}))
        .await;
    assert_eq!(e["error"], "held", "{e}");
    let second = e["approval_id"].as_str().unwrap().to_owned();
    assert_ne!(second, id);
    assert_eq!(superuser(&db, "SELECT count(*) FROM orders"), "1");

    // Someone else's request, or none, is not found.
    let e = mcp.fails("status", json!({"id": "a-000000000000"})).await;
    assert_eq!(e["error"], "not_found", "{e}");

    // The audit log shows each step under the agent's identity.
    let (ok, out, err) = veilctl(Some(&fw.admin_url), &["audit", "export"]).await;
    assert!(ok, "{err}");
    let log = payloads(&out);
    let statement = |text: &str, decision: &str| {
        log.iter().any(|e| {
            e["type"] == "statement"
                && e["identity"] == "ops-agent"
                && e["grant"] == json!(grant)
                && e["text"] == text
                && e["decision"] == decision
        })
    };
    assert!(statement("SELECT count(*) AS n FROM orders", "allow"));
    assert!(statement("SET ROLE postgres", "deny"));
    assert!(statement("DELETE FROM orders", "hold"));
    let proposed = log
        .iter()
        .find(|e| e["type"] == "statement" && e["via"] == "proposal");
    assert!(
        proposed.is_some_and(|e| e["identity"] == "ops-agent" && e["approval"] == json!(id)),
        "{proposed:?}"
    );
    let requested = log
        .iter()
        .find(|e| e["type"] == "approval.requested" && e["approval"] == json!(id))
        .expect("approval.requested");
    assert_eq!(requested["identity"], "ops-agent");
    assert_eq!(requested["mode"], "defer");
    assert!(log.iter().any(|e| e["type"] == "approval.decided"
        && e["approval"] == json!(id)
        && e["status"] == "approved"
        && e["by"] == "oncall"));
    assert!(
        log.iter()
            .any(|e| e["type"] == "approval.executed" && e["approval"] == json!(id))
    );
    let ran = log.iter().find(|e| {
        e["type"] == "statement.outcome"
            && e["identity"] == "ops-agent"
            && e["approval"] == json!(id)
    });
    assert!(
        ran.is_some_and(|e| e["rows"] == json!(orders) && e["outcome"] == "ok"),
        "{ran:?}"
    );
    assert!(
        log.iter()
            .any(|e| e["type"] == "approval.requested" && e["approval"] == json!(second))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_whoami_resources_and_json_values() {
    let fw = Firewall::start("50ms").await;
    let db = sample_db("mcp_schema");
    let (grant, pw) = agent_grant(&fw, "30m").await;
    let mut mcp = Mcp::start(&fw, &agent_url(&fw, &db, &pw)).await;

    let d = mcp.ok("describe", json!({})).await;
    let tables = d["tables"].as_array().unwrap();
    let orders = tables
        .iter()
        .find(|t| t["schema"] == "public" && t["name"] == "orders")
        .expect("orders listed");
    assert_eq!(orders["readable"], true);
    let d = mcp.ok("describe", json!({"table": "orders"})).await;
    assert_eq!(d["table"], "public.orders");
    let cols: Vec<&str> = d["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        cols.contains(&"id") && cols.contains(&"total_cents"),
        "{cols:?}"
    );
    assert_eq!(d["primary_key"], json!(["id"]));
    let e = mcp
        .fails("describe", json!({"table": "no_such_table"}))
        .await;
    assert_eq!(e["error"], "not_found");

    let w = mcp.ok("whoami", json!({})).await;
    assert_eq!(w["identity"], "ops-agent", "{w}");
    assert_eq!(w["kind"], "agent", "{w}");
    assert_eq!(w["role"]["name"], "agent", "{w}");
    assert_eq!(w["grant"]["id"], json!(grant), "{w}");
    assert!(w["grant"]["expires_at"].is_string(), "{w}");
    assert!(w["blast_radius"]["summary"].is_array(), "{w}");

    // Resources: the tables this identity may read.
    let r = mcp.request("resources/list", json!({})).await;
    let uris: Vec<&str> = r["result"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert!(
        uris.contains(&"infraveil://table/public.orders"),
        "{uris:?}"
    );
    // billing is not the agent's: PostgreSQL shows it nothing there.
    assert!(!uris.iter().any(|u| u.contains("billing")), "{uris:?}");
    let r = mcp
        .request(
            "resources/read",
            json!({"uri": "infraveil://table/public.orders"}),
        )
        .await;
    let text = r["result"]["contents"][0]["text"].as_str().unwrap();
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["table"], "public.orders");

    // Values come back JSON-safe.
    let r = mcp
        .ok(
            "query",
            json!({"sql": "SELECT 12345678901234567890.50::numeric AS n, \
                   '2026-01-02 03:04:05.25+00'::timestamptz AS t, \
                   '\\xdeadbeef'::bytea AS b, NULL::int AS z, 42::int8 AS i, \
                   'x'::text AS s, ARRAY[1, NULL, 3] AS a, '{\"k\": [1]}'::jsonb AS j, \
                   true AS f, 1.5::float8 AS d, 'NaN'::float8 AS nan, DATE '2026-12-01' AS day"}),
        )
        .await;
    let row = &r["rows"][0];
    assert_eq!(row[0], "12345678901234567890.50");
    assert_eq!(row[1], "2026-01-02T03:04:05.250Z");
    assert_eq!(row[2], "3q2+7w==");
    assert_eq!(row[3], Value::Null);
    assert_eq!(row[4], 42);
    assert_eq!(row[5], "x");
    assert_eq!(row[6], json!([1, null, 3]));
    assert_eq!(row[7], json!({"k": [1]}));
    assert_eq!(row[8], true);
    assert_eq!(row[9], 1.5);
    assert_eq!(row[10], "NaN");
    assert_eq!(row[11], "2026-12-01");
    assert_eq!(r["columns"][1]["type"], "timestamptz");
    // Parameters, as text PostgreSQL converts.
    let r = mcp
        .ok(
            "query",
            json!({"sql": "SELECT $1::int + 1, $2::text IS NULL, $3::numeric * 2", "params": [41, null, "0.25"]}),
        )
        .await;
    assert_eq!(r["rows"][0], json!([42, true, "0.50"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_expiring_mid_session_ends_access_clearly() {
    let fw = Firewall::start("50ms").await;
    let db = sample_db("mcp_expiry");
    let (grant, pw) = agent_grant(&fw, "3s").await;
    let mut mcp = Mcp::start(&fw, &agent_url(&fw, &db, &pw)).await;
    assert_eq!(
        mcp.ok("query", json!({"sql": "SELECT 1"})).await["rows"][0][0],
        1
    );
    // The firewall ends the session at expiry; the next calls say so.
    let mut last = Value::Null;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (err, v) = mcp.call("query", json!({"sql": "SELECT 1"})).await;
        if err {
            last = v;
            break;
        }
    }
    assert_eq!(last["error"], "access_ended", "{last}");
    let msg = last["message"].as_str().unwrap();
    assert!(
        msg.contains("access has ended") && msg.contains(&grant) && msg.contains("expired"),
        "{msg}"
    );
    assert!(
        last["next"].as_str().unwrap().contains("new grant"),
        "{last}"
    );
    // It stays ended, and the admin API refuses the expired secret too.
    let e = mcp.fails("query", json!({"sql": "SELECT 1"})).await;
    assert_eq!(e["error"], "access_ended", "{e}");
    let e = mcp.fails("whoami", json!({})).await;
    assert_eq!(e["error"], "access_ended", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_call_cancels_its_query() {
    let fw = Firewall::start("50ms").await;
    let db = sample_db("mcp_cancel");
    let (_, pw) = agent_grant(&fw, "30m").await;
    let mut mcp = Mcp::start(&fw, &agent_url(&fw, &db, &pw)).await;
    let sleeping = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
         AND state = 'active' AND query LIKE 'SELECT pg_sleep%'"
    );
    let id = mcp
        .start_request(
            "tools/call",
            json!({"name": "query", "arguments": {"sql": "SELECT pg_sleep(30)"}}),
        )
        .await;
    let mut seen = false;
    for _ in 0..100 {
        if superuser(&db, &sleeping) == "1" {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the query never started");
    mcp.notify(
        "notifications/cancelled",
        json!({"requestId": id, "reason": "the user changed their mind"}),
    )
    .await;
    // PostgreSQL stops running it (cancelled through the firewall)...
    let mut gone = false;
    for _ in 0..100 {
        if superuser(&db, &sleeping) == "0" {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "pg_sleep still running after the cancel");
    // ...and the session goes on.
    assert_eq!(
        mcp.ok("query", json!({"sql": "SELECT 2"})).await["rows"][0][0],
        2
    );
    // The audit log has its outcome: cancelled (57014), not finished.
    let (ok, out, err) = veilctl(Some(&fw.admin_url), &["audit", "export"]).await;
    assert!(ok, "{err}");
    let log = payloads(&out);
    let sleep = log
        .iter()
        .find(|e| {
            e["type"] == "statement"
                && e["identity"] == "ops-agent"
                && e["text"] == "SELECT pg_sleep(30)"
        })
        .expect("the statement's record");
    // A read's outcome is folded into its record, or follows it.
    let outcome = if sleep["outcome"].is_string() {
        sleep.clone()
    } else {
        log.iter()
            .find(|e| {
                e["type"] == "statement.outcome"
                    && e["session"] == sleep["session"]
                    && e["statement"] == sleep["statement"]
            })
            .cloned()
            .expect("the statement's outcome")
    };
    assert_eq!(outcome["sqlstate"], "57014", "{outcome}");
}

/// A role in `wait` mode (the demo's `deployer`, destructive statements
/// held for `oncall`): a proposal approved beforehand lets the identical
/// statement run once without blocking; the next run waits on a new
/// request, and cancelling the call cancels that request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_mode_role_runs_an_approved_proposal_once() {
    let fw = Firewall::start("50ms").await;
    let db = sample_db("mcp_wait");
    // alice, deployer, from the firewall's development credential.
    let url = format!(
        "postgres://alice:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
        fw.pg_port
    );
    let mut mcp = Mcp::start(&fw, &url).await;
    let w = mcp.ok("whoami", json!({})).await;
    assert_eq!(w["role"]["name"], "deployer", "{w}");
    assert_eq!(w["role"]["mode"], "wait", "{w}");
    let sql = "DELETE FROM orders";
    let p = mcp
        .ok("propose", json!({"sql": sql, "reason": "reset the sample"}))
        .await;
    let id = p["approval"]["id"].as_str().unwrap().to_owned();
    let (ok, _, err) = veilctl(
        Some(&fw.admin_url),
        &["approvals", "approve", &id, "--as", "oncall"],
    )
    .await;
    assert!(ok, "{err}");
    let r = mcp.ok("query", json!({"sql": sql})).await;
    assert_eq!(r["rows_affected"], 200, "{r}");
    assert_eq!(
        mcp.ok("status", json!({"id": id})).await["status"],
        "executed"
    );

    // Again: it waits for a human on a new request; cancelling the call
    // cancels the request, and nothing ran.
    superuser(
        &db,
        "INSERT INTO orders (customer_id, total_cents) SELECT id, 1 FROM customers LIMIT 1",
    );
    let call = mcp
        .start_request(
            "tools/call",
            json!({"name": "query", "arguments": {"sql": sql}}),
        )
        .await;
    let list = || async {
        let (ok, out, err) = veilctl(
            Some(&fw.admin_url),
            &["--output", "json", "approvals", "list", "--all"],
        )
        .await;
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["identity"] == "alice" && r["id"] != json!(id))
            .cloned()
    };
    let mut waiting = None;
    for _ in 0..100 {
        if let Some(r) = list().await {
            waiting = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiting = waiting.expect("a new request for the second run");
    assert_eq!(waiting["status"], "pending", "{waiting}");
    mcp.notify("notifications/cancelled", json!({"requestId": call}))
        .await;
    let mut status = Value::Null;
    for _ in 0..100 {
        status = list().await.unwrap()["status"].clone();
        if status != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "cancelled");
    assert_eq!(superuser(&db, "SELECT count(*) FROM orders"), "1");
    assert_eq!(
        mcp.ok("query", json!({"sql": "SELECT 3"})).await["rows"][0][0],
        3
    );
}

/// The firewall session dies under the MCP server (here: PostgreSQL ends
/// its backend); the next calls connect again, as the same identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_made_again() {
    let fw = Firewall::start("50ms").await;
    let db = sample_db("mcp_reconnect");
    let (_, pw) = agent_grant(&fw, "30m").await;
    let mut mcp = Mcp::start(&fw, &agent_url(&fw, &db, &pw)).await;
    let before = mcp
        .ok("query", json!({"sql": "SELECT pg_backend_pid()"}))
        .await["rows"][0][0]
        .clone();
    superuser(&db, &format!("SELECT pg_terminate_backend({before})"));
    // A call racing the news may say the connection was lost (a statement
    // is never re-sent by itself); after that, it connects again.
    let mut after = Value::Null;
    let mut failures = Vec::new();
    for _ in 0..20 {
        let (err, v) = mcp
            .call("query", json!({"sql": "SELECT pg_backend_pid()"}))
            .await;
        if !err {
            after = v["rows"][0][0].clone();
            break;
        }
        failures.push(v);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(after.is_number(), "never reconnected: {failures:?}");
    assert_ne!(after, before);
    assert!(failures.len() <= 1, "{failures:?}");
    for f in &failures {
        assert_ne!(f["error"], "access_ended", "{f}");
    }
}

/// `/v1/self` answers only with the caller's own active grant, and only
/// about the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_service_api_is_scoped_to_the_caller() {
    let fw = Firewall::start("50ms").await;
    let db = sample_db("mcp_self");
    let (_, pw) = agent_grant(&fw, "30m").await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1/self/{p}", fw.admin_url);
    let propose = |who: &str, secret: &str, sql: &str| {
        http.post(url("proposals"))
            .basic_auth(who, Some(secret))
            .json(&json!({"sql": sql, "reason": "test", "database": db}))
            .send()
    };

    // No credential, the admin token, a wrong secret: refused.
    let r = http.get(url("whoami")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(url("whoami"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = propose("ops-agent", "not-the-secret", "DELETE FROM orders")
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Statements the policy allows or denies get no request.
    for (sql, decision) in [("SELECT 1", "allow"), ("SET ROLE postgres", "deny")] {
        let r = propose("ops-agent", &pw, sql).await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["proposed"], false, "{v}");
        assert_eq!(v["decision"], decision, "{v}");
    }
    let (ok, out, _) = veilctl(
        Some(&fw.admin_url),
        &["--output", "json", "approvals", "list", "--all"],
    )
    .await;
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));

    // A request is its owner's: another identity cannot see it.
    let r = propose("ops-agent", &pw, "DELETE FROM orders")
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["approval"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = http
        .get(url(&format!("approvals/{id}")))
        .basic_auth("ops-agent", Some(&pw))
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), 200);
    let theirs = http
        .get(url(&format!("approvals/{id}")))
        .basic_auth("alice", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
    // Nothing ran; the request says where it came from.
    assert_eq!(superuser(&db, "SELECT count(*) FROM orders"), "200");
    let (ok, out, _) = veilctl(
        Some(&fw.admin_url),
        &["--output", "json", "approvals", "list"],
    )
    .await;
    assert!(ok);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"], json!(id), "{listed}");
    assert_eq!(listed[0]["identity"], "ops-agent");
    assert!(
        listed[0]["client_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{listed}"
    );

    // Guessing is cut short.
    let mut last = 0;
    for _ in 0..6 {
        last = http
            .get(url("whoami"))
            .basic_auth("ops-agent", Some("guess"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
}

/// `--grant-file`: the JSON `veilctl --output json grants issue` prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_file_is_enough_to_start() {
    let fw = Firewall::start("50ms").await;
    let db = sample_db("mcp_file");
    let (id, pw) = agent_grant(&fw, "30m").await;
    let dir = scratch_dir();
    let file = dir.join("grant.json");
    let issued = json!({"id": id, "identity": "ops-agent", "role": "agent",
                        "password": pw, "database_url": agent_url(&fw, &db, &pw)});
    std::fs::write(&file, issued.to_string()).unwrap();
    let mut mcp = Mcp::start_with(&fw, &["--grant-file", file.to_str().unwrap()], None).await;
    let r = mcp
        .ok("query", json!({"sql": "SELECT count(*) FROM customers"}))
        .await;
    assert_eq!(r["rows"][0][0], 50);
    assert_eq!(mcp.ok("whoami", json!({})).await["grant"]["id"], json!(id));
    let _ = std::fs::remove_dir_all(dir);
}
