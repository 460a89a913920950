//! Unit tests of the policy inspector over the example `policies/`: what
//! each role's statements get, as the proxy sees it.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::classify::Class;
use crate::policy::{Action, ApprovalMode, Prepared};

fn example() -> Arc<PolicySet> {
    Arc::new(
        PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
            .expect("the example policies load"),
    )
}

fn inspect(i: &PolicyInspector, who: (&str, &str), sql: &str, origin: Origin<'_>) -> Inspection {
    i.inspect(
        &SessionInfo::for_test(who.0, who.1),
        &Prepared::default(),
        sql,
        origin,
    )
}

#[test]
fn each_role_gets_its_classes() {
    let i = PolicyInspector::new(example()).unwrap();
    let read = inspect(
        &i,
        ("oncall", "readonly"),
        "SELECT * FROM customers",
        Origin::SimpleQuery,
    );
    assert_eq!(read.decision, Decision::Allow);
    assert_eq!(read.class, Some(Class::Read));
    assert_eq!(read.tables, vec!["public.customers"]);
    assert!(read.rule.is_some_and(|r| r.starts_with("roles.readonly")));

    let write = inspect(
        &i,
        ("oncall", "readonly"),
        "DELETE FROM customers WHERE id = 1",
        Origin::SimpleQuery,
    );
    let Decision::Deny(e) = &write.decision else {
        panic!("a write by readonly is denied: {write:?}");
    };
    assert_eq!(e.code, "42501");
    assert!(e.message.contains("write statement"), "{e}");

    let drop = inspect(
        &i,
        ("alice", "deployer"),
        "DROP TABLE customers",
        Origin::SimpleQuery,
    );
    let Decision::Hold(held) = &drop.decision else {
        panic!("a DROP by deployer is held: {drop:?}");
    };
    assert_eq!(held.class, Class::Destructive);
    assert_eq!(held.approvers, vec!["oncall"]);
    assert_eq!(held.mode, ApprovalMode::Wait);
    assert_eq!(drop.decision.action(), Action::Hold);

    // The agent's writes wait for a human too, in defer mode.
    let agent = inspect(
        &i,
        ("ops-agent", "agent"),
        "UPDATE customers SET name = 'x' WHERE id = 1",
        Origin::SimpleQuery,
    );
    let Decision::Hold(held) = &agent.decision else {
        panic!("{agent:?}");
    };
    assert_eq!(held.mode, ApprovalMode::Defer);
}

/// Whether an identity may hold a role is settled at login (grants are
/// issued only for roles the policy lets it hold); the inspector judges by
/// the session's role, and a role no policy defines allows nothing.
#[test]
fn a_role_no_policy_defines_allows_nothing() {
    let i = PolicyInspector::new(example()).unwrap();
    let r = inspect(
        &i,
        ("alice", "no-such-role"),
        "SELECT 1",
        Origin::SimpleQuery,
    );
    assert_eq!(r.decision.action(), Action::Deny, "{r:?}");
    // No policies at all: everything is denied.
    let empty = PolicyInspector::empty();
    let r = inspect(
        &empty,
        ("alice", "readonly"),
        "SELECT 1",
        Origin::SimpleQuery,
    );
    assert_eq!(r.decision.action(), Action::Deny);
}

#[test]
fn execute_is_not_prepared() {
    let i = PolicyInspector::new(example()).unwrap();
    // `EXECUTE name` prepared would run whatever `name` is when it is
    // executed, so it is refused even for a name that now reads.
    let mut prepared = Prepared::default();
    prepared.remember("reads", Class::Read);
    let r = i.inspect(
        &SessionInfo::for_test("alice", "writer"),
        &prepared,
        "EXECUTE reads",
        Origin::Parse { statement: "s1" },
    );
    assert_eq!(r.decision, Decision::Deny(PgError::execute_not_prepared()));
    // As a simple query it runs what `reads` is now.
    let r = i.inspect(
        &SessionInfo::for_test("alice", "writer"),
        &prepared,
        "EXECUTE reads",
        Origin::SimpleQuery,
    );
    assert_eq!(r.decision, Decision::Allow, "{r:?}");
}

#[test]
fn a_reload_changes_decisions_and_policies_in_one_swap() {
    let i = PolicyInspector::new(example()).unwrap();
    let before = i.policies().unwrap();
    assert!(before.role("readonly").is_some());
    // A set without the role: its reads are denied from now on, and the
    // roles logins read are the new set's.
    let mut narrowed = (*example()).clone();
    narrowed.roles.remove("readonly");
    i.reload(Arc::new(narrowed)).unwrap();
    let r = inspect(&i, ("oncall", "readonly"), "SELECT 1", Origin::SimpleQuery);
    assert_eq!(r.decision.action(), Action::Deny);
    let after = i.policies().unwrap();
    assert!(after.role("readonly").is_none());
    assert!(!Arc::ptr_eq(&before, &after));
}

/// Which strings a limited role must have planned, and what stands over
/// the limit.
#[test]
fn limited_roles_get_a_row_check_for_writes_the_planner_can_size() {
    let i = PolicyInspector::new(example()).unwrap();
    let ci = ("deploy-bot", "ci");
    let check = |sql: &str| inspect(&i, ci, sql, Origin::SimpleQuery).row_check;

    let c = check("DELETE FROM orders WHERE id > 0").expect("a bounded DELETE is sized");
    assert_eq!(c.statements, vec!["DELETE FROM orders WHERE id > 0"]);
    assert_eq!((c.max_rows, c.max_rows_fraction), (Some(10000), Some(0.5)));
    assert_eq!(c.upstream_user, "app_write");
    assert!(c.unplannable.is_none());
    // Over the limit: held as destructive for the role's approvers.
    let (d, class, rule) = c.over("the planner expects 20000 rows");
    assert_eq!(class, Class::Destructive);
    assert_eq!(rule, "roles.ci.approve");
    let Decision::Hold(h) = d else {
        panic!("held: {d:?}");
    };
    assert_eq!(h.class, Class::Destructive);
    assert_eq!(h.reason, "the planner expects 20000 rows");
    assert_eq!(h.approvers, vec!["oncall"]);

    // Each statement of a string alone, as PostgreSQL splits it; only the
    // writes the planner can size.
    let c = check("SELECT 1; UPDATE orders SET status = 'x' WHERE id < 5; INSERT INTO orders (customer_id) VALUES (1)")
        .unwrap();
    assert_eq!(
        c.statements,
        vec!["UPDATE orders SET status = 'x' WHERE id < 5"]
    );
    let c =
        check("WITH d AS (DELETE FROM orders WHERE id > 3 RETURNING id) SELECT count(*) FROM d")
            .unwrap();
    assert_eq!(c.statements.len(), 1);

    // Reads, inserts, and what is denied anyway are not planned; nor is a
    // destructive statement (already judged as one).
    for sql in [
        "SELECT * FROM orders",
        "INSERT INTO orders (customer_id) VALUES (1)",
        "DELETE FROM orders",
        "DROP TABLE orders",
        "DELETE FROM pg_catalog.pg_class WHERE oid = 1",
    ] {
        assert!(check(sql).is_none(), "{sql}");
    }
    // Rows changed inside what EXPLAIN cannot plan as written: over
    // without asking. An upsert is planned like the rest.
    for sql in [
        "EXPLAIN ANALYZE DELETE FROM orders WHERE id > 0",
        "COPY (DELETE FROM orders WHERE id > 0 RETURNING id) TO STDOUT",
    ] {
        let c = check(sql).unwrap_or_else(|| panic!("{sql}: checked"));
        assert!(c.unplannable.is_some(), "{sql}: {c:?}");
    }
    let c = check(
        "INSERT INTO orders (id, customer_id) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET status = 'x'",
    )
    .unwrap();
    assert!(c.unplannable.is_none() && c.statements.len() == 1, "{c:?}");
    let c =
        check("(WITH d AS (DELETE FROM orders WHERE id > 0 RETURNING 1) SELECT count(*) FROM d)")
            .unwrap();
    assert!(c.unplannable.is_none() && c.statements.len() == 1, "{c:?}");
    // A role without limits never is.
    let w = inspect(
        &i,
        ("alice", "deployer"),
        "DELETE FROM orders WHERE id > 0",
        Origin::SimpleQuery,
    );
    assert!(w.row_check.is_none());

    // An EXECUTE of a prepared write cannot be planned apart from the
    // session: it is over without asking.
    let mut prepared = Prepared::default();
    prepared.remember("d", Class::Write);
    let e = i.inspect(
        &SessionInfo::for_test("deploy-bot", "ci"),
        &prepared,
        "EXECUTE d(1)",
        Origin::SimpleQuery,
    );
    let c = e.row_check.expect("checked");
    assert!(c.unplannable.is_some(), "{c:?}");
}
