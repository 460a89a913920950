//! Unit tests of [`super`].

use super::*;
use std::path::Path;

fn policies() -> PolicySet {
    PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap()
}

fn req(identity: &str, role: &str, ttl: Option<&str>) -> IssueRequest {
    IssueRequest {
        identity: identity.into(),
        role: role.into(),
        ttl: ttl.map(|t| crate::config::parse_duration(t).unwrap()),
        reason: None,
        issued_by: None,
    }
}

#[test]
fn issue_checks_follow_policy() {
    let p = policies();
    assert_eq!(
        check_issue(&p, &req("alice", "readonly", Some("1h"))).unwrap(),
        Some(Duration::from_secs(3600))
    );
    let cases = [
        (req("mallory", "readonly", Some("1h")), "not defined"),
        (req("alice", "superuser", Some("1h")), "not defined"),
        (req("oncall", "deployer", Some("1h")), "may not hold"),
        (
            req("alice", "deployer", Some("3h")),
            "exceeds the maximum of 2h",
        ),
        (
            req("alice", "readonly", Some("9h")),
            "exceeds the maximum of 8h",
        ),
        (req("alice", "readonly", None), "TTL is required"),
        (req("alice", "readonly", Some("0s")), "at least one second"),
        (
            req("billing-svc", "readonly", Some("1h")),
            "may hold: billing",
        ),
    ];
    for (r, want) in cases {
        let e = check_issue(&p, &r).unwrap_err().to_string();
        assert!(e.contains(want), "{} as {}: {e}", r.identity, r.role);
    }
    // A service's standing role needs no TTL and has no cap.
    assert_eq!(
        check_issue(&p, &req("billing-svc", "billing", None)).unwrap(),
        None
    );
    assert!(check_issue(&p, &req("billing-svc", "billing", Some("30d"))).is_ok());
}

#[test]
fn an_agent_never_holds_a_role_that_runs_destructive_statements_unreviewed() {
    let mut p = PolicySet::default();
    p.add_file(
        Path::new("p.toml"),
        "[roles.yolo]\nupstream_user='u'\nallow=['read','destructive']\n\
         [identities.bot]\nkind='agent'\nroles=['yolo']",
    )
    .unwrap();
    p.validate().unwrap();
    let e = check_issue(&p, &req("bot", "yolo", Some("1h"))).unwrap_err();
    assert!(matches!(e, GrantError::KindForbids { .. }), "{e}");
}
