//! Unit tests of [`super`].

use super::*;
use std::path::Path;

fn engine(text: &str) -> Engine {
    let mut set = PolicySet::default();
    set.add_file(Path::new("p.toml"), text).unwrap();
    set.validate().unwrap();
    Engine::new(Arc::new(set)).unwrap()
}

fn judge(e: &Engine, who: &str, role: &str, sql: &str) -> Verdict {
    e.judge(who, role, &e.analyze(sql), &Prepared::default())
        .overall
}

const POLICY: &str = r#"
[roles.ro]
upstream_user = "u"
allow = ["read"]
tables = ["public.*"]
[roles.dep]
upstream_user = "u"
allow = ["read", "write", "ddl"]
approve = ["destructive"]
approvers = ["boss"]
[roles.bare]
upstream_user = "u"
[roles.fns]
upstream_user = "u"
allow = ["read"]
safe_functions = ["my_func", "util.score"]
[identities.h]
kind = "human"
roles = ["ro", "dep"]
[identities.boss]
kind = "human"
[identities.bot]
kind = "ci"
[identities.ag]
kind = "agent"
[identities.svc]
kind = "service"
"#;

#[test]
fn denials_say_what_the_role_allows_and_where_to_go() {
    let e = engine(POLICY);
    let v = judge(&e, "h", "ro", "UPDATE t SET a = 1 WHERE id = 1");
    assert_eq!((v.action, v.rule.as_str()), (Action::Deny, "kinds.human"));
    assert_eq!(
        v.advice.as_deref(),
        Some(
            "role ro allows only read; write statements need a grant in role dep \
             (ask an admin: veilctl grants issue --identity h --role dep --ttl 1h --reason TICKET)"
        )
    );
    let v = judge(&e, "h", "dep", "GRANT ALL ON t TO public");
    assert_eq!(
        v.advice.as_deref(),
        Some(
            "role dep allows only read, write, ddl and holds destructive for approval by boss; \
             no role h may be granted runs privileged statements: ask whoever maintains the infraveil policies"
        )
    );
    assert_eq!(judge(&e, "h", "ro", "SELECT 1").advice, None);
}

#[test]
fn role_lists_then_kind_defaults() {
    let e = engine(POLICY);
    assert_eq!(judge(&e, "h", "ro", "SELECT 1").action, Action::Allow);
    let v = judge(&e, "h", "ro", "UPDATE t SET a = 1 WHERE id = 1");
    assert_eq!((v.action, v.rule.as_str()), (Action::Deny, "kinds.human"));
    let v = judge(&e, "h", "dep", "DROP TABLE t");
    assert_eq!(
        (v.action, v.rule.as_str()),
        (Action::Hold, "roles.dep.approve")
    );
    assert_eq!(v.approvers, vec!["boss".to_string()]);
    // Kind defaults through a role that lists nothing.
    for (who, sql, want) in [
        ("ag", "SELECT 1", Action::Allow),
        ("ag", "INSERT INTO t VALUES (1)", Action::Deny), // hold, but no approvers
        ("ag", "SET ROLE postgres", Action::Deny),
        ("bot", "CREATE TABLE x (a int)", Action::Allow),
        ("svc", "INSERT INTO t VALUES (1)", Action::Allow),
        ("svc", "CREATE TABLE x (a int)", Action::Deny),
        ("h", "garbage here", Action::Deny),
    ] {
        assert_eq!(judge(&e, who, "bare", sql).action, want, "{who}: {sql}");
    }
    assert_eq!(kind_default(Kind::Agent, Class::Destructive), Action::Hold);
    assert_eq!(kind_default(Kind::Ci, Class::Destructive), Action::Hold);
    assert_eq!(kind_default(Kind::Human, Class::Write), Action::Deny);
}

#[test]
fn one_denial_denies_the_whole_string() {
    let e = engine(POLICY);
    let v = judge(&e, "h", "ro", "SELECT 1; DROP TABLE t; SELECT 2");
    assert_eq!(v.action, Action::Deny);
    assert_eq!(v.class, Class::Destructive);
    let v = judge(&e, "h", "dep", "SELECT 1; DROP TABLE t; SET ROLE x");
    assert_eq!(v.action, Action::Deny, "privileged beats the hold");
}

#[test]
fn table_scope_is_enforced_per_table() {
    let e = engine(POLICY);
    assert_eq!(
        judge(&e, "h", "ro", "SELECT * FROM orders").action,
        Action::Allow
    );
    let v = judge(
        &e,
        "h",
        "ro",
        "SELECT * FROM orders JOIN billing.invoices i ON true",
    );
    assert_eq!(
        (v.action, v.rule.as_str()),
        (Action::Deny, "roles.ro.tables")
    );
    assert!(v.reason.contains("billing.invoices"), "{}", v.reason);
    // A quoted schema with a dot in it is not public.
    let v = judge(&e, "h", "ro", r#"SELECT * FROM "public.x".y"#);
    assert_eq!(v.action, Action::Deny);
    let v = judge(&e, "h", "ro", r#"SELECT * FROM "PUBLIC".t"#);
    assert_eq!(
        v.action,
        Action::Deny,
        "quoted upper-case schema is another schema"
    );
    // Catalogs are in every scope, but not those that show other
    // tables' values or other sessions' statements.
    let allowed = |sql: &str| judge(&e, "h", "ro", sql).action == Action::Allow;
    assert!(allowed("SELECT relname FROM pg_class"));
    assert!(allowed("SELECT * FROM information_schema.columns"));
    assert!(!allowed("SELECT most_common_vals FROM pg_stats"));
    assert!(!allowed("SELECT query FROM pg_catalog.pg_stat_activity"));
}

#[test]
fn safe_functions_forgive_only_listed_functions() {
    let e = engine(POLICY);
    for (role, sql, want) in [
        ("fns", "SELECT my_func(1)", Action::Allow),
        ("fns", "SELECT util.score(1)", Action::Allow),
        ("fns", "SELECT my_func(1), other(2)", Action::Deny),
        ("ro", "SELECT my_func(1)", Action::Deny),
    ] {
        assert_eq!(judge(&e, "h", role, sql).action, want, "{role}: {sql}");
    }
    // Forgiving a function does not forgive what else the statement does.
    let v = judge(&e, "h", "fns", "DELETE FROM t WHERE my_func(id)");
    assert_eq!((v.action, v.class), (Action::Deny, Class::Destructive));
}

#[test]
fn execute_takes_the_class_remembered_from_prepare() {
    let e = engine(POLICY);
    let mut mem = Prepared::default();
    let j = e.judge("h", "dep", &e.analyze("PREPARE p AS DELETE FROM t"), &mem);
    assert_eq!(j.overall.action, Action::Hold);
    let j = e.judge("h", "dep", &e.analyze("PREPARE q AS SELECT 1"), &mem);
    assert_eq!(j.overall.action, Action::Allow);
    mem = j.prepared.clone();
    assert_eq!(judge_with(&e, &mem, "EXECUTE q").action, Action::Allow);
    // Never prepared through us: unknown, denied.
    let v = judge_with(&e, &mem, "EXECUTE p");
    assert_eq!((v.action, v.class), (Action::Deny, Class::Unknown));
    // Same string: the prepare counts for the execute after it.
    let v = judge_with(
        &e,
        &Prepared::default(),
        "PREPARE z AS DELETE FROM t; EXECUTE z",
    );
    assert_eq!((v.action, v.class), (Action::Hold, Class::Destructive));
    // A name only gets more severe.
    mem.remember("q", Class::Destructive);
    mem.remember("q", Class::Read);
    assert_eq!(mem.get("q"), Some(Class::Destructive));
}

fn judge_with(e: &Engine, mem: &Prepared, sql: &str) -> Verdict {
    e.judge("h", "dep", &e.analyze(sql), mem).overall
}

#[test]
fn bad_globs_and_unknown_principals_fail_closed() {
    let mut set = PolicySet::default();
    set.add_file(
        Path::new("p.toml"),
        "[roles.r]\nupstream_user='u'\ntables=['nodot']",
    )
    .unwrap();
    let err = Engine::new(Arc::new(set)).err().expect("bad scope");
    assert!(err.to_string().contains("schema.table"), "{err}");
    let e = engine(POLICY);
    assert_eq!(judge(&e, "nobody", "ro", "SELECT 1").action, Action::Deny);
    assert_eq!(judge(&e, "h", "nope", "SELECT 1").action, Action::Deny);
}
