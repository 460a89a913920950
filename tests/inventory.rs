//! Who could: `veilctl blast-radius`, `access review` and `policy init`
//! against a real PostgreSQL, with upstream users whose real privileges
//! differ from what the policies say.

mod common;

use std::path::Path;

use common::{Proxy, ProxyOptions, cluster, fresh_db_with, scratch_dir, veilctl};
use serde_json::Value;

/// Tables owned by the cluster superuser, with privileges that disagree
/// with the policies below: app_write may TRUNCATE orders and customers
/// (the `agent` role denies destructive) and read `secrets` (outside its
/// scope); app_read reads nothing but may UPDATE one column of orders
/// (the `reader` role allows write on every public table).
const SCHEMA: &str = "
CREATE TABLE public.customers (id bigint PRIMARY KEY, name text);
CREATE TABLE public.orders (id bigint PRIMARY KEY, status text);
CREATE TABLE public.secrets (id bigint PRIMARY KEY, token text);
INSERT INTO public.customers SELECT g, 'c' || g FROM generate_series(1, 50) g;
INSERT INTO public.orders SELECT g, 'new' FROM generate_series(1, 10000) g;
GRANT USAGE ON SCHEMA public TO app_write, app_read;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON public.orders, public.customers TO app_write;
GRANT SELECT ON public.secrets TO app_write;
GRANT UPDATE (status) ON public.orders TO app_read;
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id bigint PRIMARY KEY);
ALTER TABLE billing.invoices ENABLE ROW LEVEL SECURITY;
GRANT USAGE ON SCHEMA billing TO app_billing;
GRANT SELECT ON billing.invoices TO app_billing;
ANALYZE;
";

const POLICIES: &str = r#"
[roles.agent]
upstream_user = "app_write"
allow = ["read"]
approve = ["write"]
deny = ["destructive"]
approvers = ["oncall"]
mode = "defer"
tables = ["public.orders", "public.customers"]
max_ttl = "1h"

[roles.reader]
upstream_user = "app_read"
allow = ["read", "write"]
tables = ["public.*", "archive.*"]
max_ttl = "8h"

[roles.billing]
upstream_user = "app_billing"
allow = ["read"]
tables = ["billing.*"]

[identities.ops-agent]
kind = "agent"
roles = ["agent", "reader"]

[identities.billing-svc]
kind = "service"
standing = "billing"

[identities.oncall]
kind = "human"
roles = ["reader"]
"#;

fn policies_dir(text: &str) -> std::path::PathBuf {
    let dir = scratch_dir().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.toml"), text).unwrap();
    dir
}

async fn proxy_with(policies: &str) -> Proxy {
    Proxy::start(ProxyOptions {
        policies_dir: Some(policies_dir(policies)),
        ..ProxyOptions::with_grants()
    })
    .await
}

fn finding<'a>(role: &'a Value, kind: &str, privilege: &str) -> Option<&'a Value> {
    role["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind && f["privilege"] == privilege)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn blast_radius_flags_an_over_privileged_upstream_user() {
    let db = fresh_db_with("blast", SCHEMA);
    let proxy = proxy_with(POLICIES).await;
    let (grant, _) = proxy.grant("ops-agent", "agent", "30m").await;
    let v = proxy
        .veilctl_json(&["blast-radius", "--identity", "ops-agent", "--database", &db])
        .await;
    assert_eq!(v["identity"], "ops-agent");
    assert_eq!(v["database"], db.as_str());
    let roles = v["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 2, "{v:#}");

    // The held role first, with its grant.
    let agent = &roles[0];
    assert_eq!(agent["role"], "agent");
    assert_eq!(agent["access"], "held");
    assert_eq!(agent["grants"][0]["id"], grant.as_str());
    let class = |r: &Value, c: &str| -> Value {
        r["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["class"] == c)
            .cloned()
            .unwrap()
    };
    assert_eq!(class(agent, "destructive")["decision"], "deny");
    let write = class(agent, "write");
    assert_eq!(write["decision"], "hold");
    assert_eq!(strings(&write["approvers"]), vec!["oncall"]);
    assert_eq!(write["mode"], "defer");
    // PostgreSQL lets app_write TRUNCATE both tables the policy scopes,
    // and read one outside the scope.
    let truncate = finding(agent, "postgres_allows_more", "TRUNCATE").expect("TRUNCATE flagged");
    assert_eq!(truncate["class"], "destructive");
    assert_eq!(
        strings(&truncate["tables"]),
        vec!["public.customers", "public.orders"]
    );
    let outside = finding(agent, "postgres_allows_more", "SELECT").expect("scope flagged");
    assert_eq!(strings(&outside["tables"]), vec!["public.secrets"]);
    let orders = agent["reach"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "public.orders")
        .unwrap();
    assert_eq!(orders["rows_estimate"], 10000);
    assert!(orders["size_bytes"].as_i64().unwrap() > 0);
    assert_eq!(strings(&orders["reachable"]), vec!["read", "write"]);
    let summary = agent["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("ops-agent, as agent until "),
        "{summary}"
    );
    assert!(
        summary.contains("reads 2 table(s) (about 10.1k rows)"),
        "{summary}"
    );
    assert!(
        summary.contains("writes held for oncall (defer)"),
        "{summary}"
    );
    assert!(summary.contains("cannot drop anything"), "{summary}");
    assert!(
        summary.contains("PostgreSQL would let app_write TRUNCATE 2 table(s)"),
        "{summary}"
    );

    // Text: the summary leads, details follow.
    let (ok, out, err) = proxy
        .veilctl(&[
            "blast-radius",
            "--identity",
            "ops-agent",
            "--database",
            &db,
            "--role",
            "agent",
        ])
        .await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("ops-agent (agent), database {db}"));
    assert!(lines[1].contains("ops-agent, as agent until"), "{out}");
    assert!(out.contains("role agent: held ("), "{out}");
    assert!(
        out.contains("! PostgreSQL allows more: app_write has TRUNCATE on 2 tables"),
        "{out}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn blast_radius_flags_what_postgres_refuses() {
    let db = fresh_db_with("refuses", SCHEMA);
    let proxy = proxy_with(POLICIES).await;
    let v = proxy
        .veilctl_json(&["blast-radius", "--identity", "ops-agent", "--database", &db])
        .await;
    let roles = v["roles"].as_array().unwrap();
    // The grantable role: the policy allows what PostgreSQL refuses.
    let reader = &roles[1];
    assert_eq!(reader["access"], "grantable");
    assert_eq!(reader["max_ttl"], "8h");
    let refused_write = reader["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "policy_allows_refused" && f["class"] == "write")
        .expect("write refused");
    // The column grant lets app_read UPDATE orders: only the others refuse.
    assert_eq!(
        strings(&refused_write["tables"]),
        vec!["public.customers", "public.secrets"]
    );
    let pattern = reader["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["message"].as_str().unwrap().contains("\"archive.*\""))
        .expect("empty pattern flagged");
    assert_eq!(pattern["kind"], "policy_allows_refused");
    let orders = reader["postgres"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap();
    assert_eq!(orders["column_privileges"][0]["column"], "status");
    assert_eq!(
        strings(&orders["column_privileges"][0]["privileges"]),
        vec!["UPDATE"]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn blast_radius_flags_role_attributes() {
    let db = fresh_db_with(
        "attrs",
        &format!(
            "{SCHEMA} CREATE TABLE billing.ledger (id bigint); \
             ALTER TABLE billing.ledger OWNER TO app_billing;"
        ),
    );
    cluster()
        .psql(
            "postgres",
            "ALTER ROLE app_billing BYPASSRLS CREATEROLE; GRANT pg_read_server_files TO app_billing;",
        )
        .unwrap();
    let proxy = proxy_with(POLICIES).await;
    // Role attributes: a service's standing role as an over-privileged user.
    let b = proxy
        .veilctl_json(&[
            "blast-radius",
            "--identity",
            "billing-svc",
            "--database",
            &db,
        ])
        .await;
    let billing = &b["roles"][0];
    assert_eq!(billing["access"], "standing");
    assert_eq!(billing["postgres"]["bypassrls"], true);
    assert!(
        finding(billing, "postgres_allows_more", "bypassrls").is_some(),
        "{b:#}"
    );
    assert!(
        finding(billing, "postgres_allows_more", "createrole").is_some(),
        "{b:#}"
    );
    // Owning a table means DROP and ALTER, which a service may not.
    let owns: Vec<(&str, Vec<&str>)> = billing["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["privilege"] == "owner")
        .map(|f| (f["class"].as_str().unwrap(), strings(&f["tables"])))
        .collect();
    assert_eq!(
        owns,
        vec![
            ("ddl", vec!["billing.ledger"]),
            ("destructive", vec!["billing.ledger"])
        ]
    );
    let files =
        finding(billing, "postgres_allows_more", "pg_read_server_files").expect("membership");
    assert_eq!(files["class"], "privileged");
    assert!(strings(&billing["postgres"]["member_of"]).contains(&"pg_read_server_files"));
    cluster()
        .psql(
            "postgres",
            "ALTER ROLE app_billing NOBYPASSRLS NOCREATEROLE; REVOKE pg_read_server_files FROM app_billing;",
        )
        .unwrap();

    proxy.shutdown().await;
}

#[tokio::test]
async fn blast_radius_bad_input_gets_clear_errors() {
    let proxy = proxy_with(POLICIES).await;
    let (ok, _, err) = proxy
        .veilctl(&["blast-radius", "--identity", "nobody"])
        .await;
    assert!(!ok);
    assert!(err.contains("identity \"nobody\" is not defined"), "{err}");
    let (ok, _, err) = proxy
        .veilctl(&[
            "blast-radius",
            "--identity",
            "ops-agent",
            "--role",
            "billing",
        ])
        .await;
    assert!(!ok);
    assert!(err.contains("(its roles: agent, reader)"), "{err}");
    // A database that does not exist: the policy side still prints, the
    // exit code and stderr say why PostgreSQL's side is missing.
    let (ok, out, err) = proxy
        .veilctl(&[
            "blast-radius",
            "--identity",
            "ops-agent",
            "--database",
            "no_such_db",
        ])
        .await;
    assert!(!ok);
    assert!(out.contains("PostgreSQL side unknown"), "{out}");
    assert!(err.contains("no_such_db"), "{err}");
    assert!(!err.contains("panick"), "{err}");
    proxy.shutdown().await;

    // An upstream nobody listens on.
    let port = common::child::free_port();
    let down = Proxy::start(ProxyOptions {
        policies_dir: Some(policies_dir(POLICIES)),
        upstream_port: Some(port),
        ..ProxyOptions::with_grants()
    })
    .await;
    let (ok, _, err) = down
        .veilctl(&["blast-radius", "--identity", "ops-agent"])
        .await;
    assert!(!ok);
    assert!(
        err.contains("cannot connect to upstream PostgreSQL"),
        "{err}"
    );
    down.shutdown().await;
}

const REVIEW_POLICIES: &str = r#"
[roles.readonly]
upstream_user = "app_read"
allow = ["read"]
max_ttl = "8h"

[roles.writer]
upstream_user = "app_write"
allow = ["read", "write"]
max_ttl = "8h"

[identities.alice]
kind = "human"
roles = ["readonly", "writer"]

[identities.oncall]
kind = "human"
roles = ["readonly"]
"#;

#[tokio::test]
async fn access_review_shows_use_and_gates_a_compliance_job() {
    let proxy = proxy_with(REVIEW_POLICIES).await;
    let (used, password) = proxy.grant("alice", "readonly", "1h").await;
    let (unused, unused_password) = proxy.grant("alice", "writer", "1h").await;
    let c = proxy.connect_with("alice", "app", &password).await;
    c.simple_query("SELECT count(*) FROM public.orders")
        .await
        .unwrap();
    drop(c);
    tokio::time::sleep(proxy.config.audit.read_window * 3).await;

    let v = proxy.veilctl_json(&["access", "review"]).await;
    let alice = v["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["identity"] == "alice")
        .unwrap();
    assert_eq!(alice["kind"], "human");
    assert_eq!(strings(&alice["roles"]), vec!["readonly", "writer"]);
    assert_eq!(alice["last_login"]["role"], "readonly");
    assert_eq!(alice["last_statement"]["class"], "read");
    assert_eq!(alice["last_statement"]["decision"], "allow");
    assert_eq!(alice["never_logged_in"], false);
    let grant = |id: &str| {
        alice["grants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == id)
            .cloned()
            .unwrap()
    };
    assert!(grant(&used)["first_used"].is_string());
    assert_eq!(grant(&used)["issued_by"], "tester");
    assert!(grant(&unused)["first_used"].is_null());
    let f = &v["findings"];
    assert_eq!(f["unused_grants"].as_array().unwrap().len(), 1, "{f}");
    assert!(f["unused_grants"][0].as_str().unwrap().starts_with(&unused));
    assert_eq!(strings(&f["never_logged_in"]), vec!["oncall"]);
    assert_eq!(strings(&f["idle_roles"]), vec!["writer"]);
    assert!(f["standing"].as_array().unwrap().is_empty());

    // --fail-on: 1 on an unused grant, 0 when only what is clean is asked.
    let (ok, _, err) = proxy
        .veilctl(&["access", "review", "--fail-on", "standing,unused"])
        .await;
    assert!(!ok);
    assert!(err.contains("fails on: unused"), "{err}");
    let (ok, _, err) = proxy
        .veilctl(&["access", "review", "--fail-on", "standing"])
        .await;
    assert!(ok, "{err}");
    let (ok, _, err) = proxy
        .veilctl(&["access", "review", "--fail-on", "stale"])
        .await;
    assert!(!ok);
    assert!(
        err.contains("use one or more of standing, unused, idle"),
        "{err}"
    );

    // Once used, the grant no longer trips the gate.
    let c = proxy.connect_with("alice", "app", &unused_password).await;
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    tokio::time::sleep(proxy.config.audit.read_window * 3).await;
    let (ok, out, err) = proxy
        .veilctl(&["access", "review", "--fail-on", "unused"])
        .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("alice"), "{out}");

    // The API refuses a window it cannot mean.
    let body = proxy.admin_get("/v1/inventory/access-review?days=0").await;
    assert!(body.contains("days must be between 1 and 3650"), "{body}");

    // CSV: a header and a row per identity.
    let (ok, out, err) = proxy
        .veilctl(&["--output", "csv", "access", "review"])
        .await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("identity,kind,may_hold,standing,grants"),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].starts_with("alice,human,readonly;writer,,"),
        "{out}"
    );
    assert!(lines[1].contains(&used), "{out}");
    // csv is only for the review.
    let (ok, _, err) = proxy.veilctl(&["--output", "csv", "grants", "list"]).await;
    assert!(!ok);
    assert!(err.contains("only for `veilctl access review`"), "{err}");
    proxy.shutdown().await;

    // With a service's standing access, --fail-on standing trips.
    let standing = proxy_with(POLICIES).await;
    let (ok, _, err) = standing
        .veilctl(&["access", "review", "--fail-on", "standing"])
        .await;
    assert!(!ok);
    assert!(err.contains("fails on: standing"), "{err}");
    standing.shutdown().await;
}

/// `veilctl check --output json SQL --identity I --policies DIR`'s decision.
async fn decision(dir: &Path, identity: &str, sql: &str) -> String {
    let (_, out, err) = veilctl(
        None,
        &[
            "--output",
            "json",
            "check",
            sql,
            "--identity",
            identity,
            "--policies",
            dir.to_str().unwrap(),
        ],
    )
    .await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    v["decision"]["action"]
        .as_str()
        .or_else(|| v["decision"].as_str())
        .unwrap_or_else(|| panic!("no decision: {v}"))
        .to_owned()
}

/// Run `policy init ARGS` against the repository's policies, write what it
/// prints beside a copy of them, and return the new directory.
async fn init_into(admin: Option<&str>, args: &[&str]) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut all = vec!["policy", "init", "--policies", repo.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, out, err) = veilctl(admin, &all).await;
    assert!(ok, "policy init {args:?}: {err}");
    let dir = scratch_dir().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(&repo).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.join("zz-guard.toml"), &out).unwrap();
    infraveil::policy::PolicySet::load_dir(&dir)
        .unwrap_or_else(|e| panic!("generated config does not load: {e}\n{out}"));
    dir
}

#[tokio::test]
async fn policy_init_prints_configs_that_load_and_check() {
    let dir = init_into(
        None,
        &[
            "--kind",
            "agent",
            "--identity",
            "claude",
            "--tables",
            "public.orders",
            "--upstream-user",
            "app_write",
        ],
    )
    .await;
    for (sql, want) in [
        ("SELECT * FROM public.orders", "allow"),
        ("UPDATE public.orders SET status = 'x' WHERE id = 1", "hold"),
        ("DELETE FROM public.orders", "hold"),
        ("SELECT * FROM public.customers", "deny"),
        ("CREATE INDEX ON public.orders (status)", "deny"),
    ] {
        assert_eq!(decision(&dir, "claude", sql).await, want, "{sql}");
    }
    for (kind, write, destructive) in [
        ("ci", "allow", "hold"),
        ("human", "hold", "hold"),
        ("service", "allow", "deny"),
    ] {
        let name = format!("new-{kind}");
        let dir = init_into(None, &["--kind", kind, "--identity", &name]).await;
        assert_eq!(
            decision(&dir, &name, "SELECT * FROM public.orders").await,
            "allow"
        );
        assert_eq!(
            decision(
                &dir,
                &name,
                "UPDATE public.orders SET status = 'x' WHERE id = 1"
            )
            .await,
            write,
            "{kind}"
        );
        assert_eq!(
            decision(&dir, &name, "TRUNCATE public.orders").await,
            destructive,
            "{kind}"
        );
    }
    // Bad input.
    let (ok, _, err) = veilctl(
        None,
        &["policy", "init", "--kind", "robot", "--identity", "x"],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("robot"), "{err}");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let (ok, _, err) = veilctl(
        None,
        &[
            "policy",
            "init",
            "--kind",
            "agent",
            "--identity",
            "alice",
            "--policies",
            repo.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("already defined"), "{err}");
    let (ok, _, err) = veilctl(
        None,
        &[
            "policy",
            "init",
            "--kind",
            "agent",
            "--identity",
            "x",
            "--policies",
            "/nonexistent",
            "--from-audit",
            "ops-agent",
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("--from-audit reads the daemon's audit log"),
        "{err}"
    );
}

#[tokio::test]
async fn policy_init_from_audit_covers_what_ran_and_holds_destruction() {
    let proxy = Proxy::start(ProxyOptions {
        admin: true,
        ..ProxyOptions::enforcing()
    })
    .await;
    let c = proxy.connect("ops-agent", "app").await;
    if let Err(e) = c.simple_query("SELECT count(*) FROM public.orders").await {
        panic!("{:?}", e.as_db_error());
    }
    // Held (defer): recorded, answered at once with the approval id.
    let e = c
        .simple_query("DELETE FROM public.customers")
        .await
        .unwrap_err();
    let held = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(held.contains("approval"), "{held}");
    // Denied statements are not part of what it needs.
    let _ = c.simple_query("SELECT * FROM pg_stat_activity").await;
    drop(c);
    tokio::time::sleep(proxy.config.audit.read_window * 3).await;
    let admin = proxy.admin_url.clone().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let (ok, out, err) = veilctl(
        Some(&admin),
        &[
            "policy",
            "init",
            "--kind",
            "agent",
            "--identity",
            "agent-2",
            "--from-audit",
            "ops-agent",
            "--since",
            "1h",
            "--policies",
            repo.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("allow = [\"read\"]"), "{out}");
    assert!(out.contains("approve = [\"destructive\"]"), "{out}");
    assert!(
        out.contains("tables = [\"public.customers\", \"public.orders\"]"),
        "{out}"
    );
    let dir = init_into(
        Some(&admin),
        &[
            "--kind",
            "agent",
            "--identity",
            "agent-2",
            "--from-audit",
            "ops-agent",
            "--since",
            "1h",
        ],
    )
    .await;
    assert_eq!(
        decision(&dir, "agent-2", "SELECT id FROM public.orders").await,
        "allow"
    );
    assert_eq!(
        decision(&dir, "agent-2", "DELETE FROM public.customers").await,
        "hold"
    );
    assert_eq!(
        decision(
            &dir,
            "agent-2",
            "UPDATE public.orders SET status = 'x' WHERE id = 1"
        )
        .await,
        "deny"
    );
    // An identity that ran nothing gets a clear error, not an empty policy.
    let (ok, _, err) = veilctl(
        Some(&admin),
        &[
            "policy",
            "init",
            "--kind",
            "ci",
            "--identity",
            "n",
            "--from-audit",
            "nobody",
            "--policies",
            repo.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("shows no statement nobody ran"), "{err}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn dev_credentials_count_as_standing_access() {
    // The harness's dev credentials: alice as deployer, rita (in no policy)
    // as readonly, and more; all standing secrets that bypass grants.
    let proxy = Proxy::start(ProxyOptions {
        admin: true,
        ..ProxyOptions::enforcing()
    })
    .await;
    let v = proxy.veilctl_json(&["access", "review"]).await;
    let standing = strings(&v["findings"]["standing"]);
    assert!(
        standing.contains(&"alice: deployer (development credential)"),
        "{standing:?}"
    );
    assert!(
        standing.contains(&"rita: readonly (development credential; identity not in the policies)"),
        "{standing:?}"
    );
    let alice = v["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["identity"] == "alice")
        .unwrap();
    assert_eq!(strings(&alice["dev_credentials"]), vec!["deployer"]);
    let (ok, out, _) = proxy
        .veilctl(&["access", "review", "--fail-on", "standing"])
        .await;
    assert!(!ok);
    assert!(out.contains("dev:deployer"), "{out}");

    let b = proxy
        .veilctl_json(&["blast-radius", "--identity", "alice", "--database", "app"])
        .await;
    assert_eq!(b["roles"][0]["role"], "deployer");
    assert_eq!(b["roles"][0]["access"], "dev");
    let summary = b["summary"][0].as_str().unwrap();
    assert!(
        summary.starts_with("alice, as deployer (development credential"),
        "{summary}"
    );
    proxy.shutdown().await;
}
