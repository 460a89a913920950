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
