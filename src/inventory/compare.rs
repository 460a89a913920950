//! The policy's view of a role beside PostgreSQL's: for every table, what
//! each class of statement gets from the policy (allow / hold / deny, scope
//! included) and what the upstream user's privileges let it do, and the
//! flags where the two disagree. Pure logic.
//!
//! PostgreSQL privileges map to statement classes as the classifier sees
//! them: `SELECT` reads; `INSERT`, `UPDATE`, `DELETE` write; `TRUNCATE` and
//! ownership (`DROP`) destroy; ownership (`ALTER`), `TRIGGER` and
//! `REFERENCES` change the schema. `DELETE` and `UPDATE` can also destroy
//! (no `WHERE`), so they count for `destructive` when asking whether
//! PostgreSQL would refuse it, but are not flagged as "more than the policy"
//! for a role that may write: writing needs them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::catalog::{PgTable, PgUser};
use crate::classify::{Class, TableName};
use crate::policy::{Action, Engine};

/// What the policy decides, in the inventory's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Hold,
    Deny,
}

impl From<Action> for Decision {
    fn from(a: Action) -> Decision {
        match a {
            Action::Allow => Decision::Allow,
            Action::Hold => Decision::Hold,
            Action::Deny => Decision::Deny,
        }
    }
}

/// The classes a table-level privilege can reach.
pub const TABLE_CLASSES: [Class; 4] = [Class::Read, Class::Write, Class::Ddl, Class::Destructive];

/// One table: the policy's decision per class and what PostgreSQL grants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableReach {
    pub table: String,
    pub kind: String,
    /// Decision per class of [`TABLE_CLASSES`].
    pub policy: BTreeMap<Class, Decision>,
    /// Privileges PostgreSQL grants (`owner` for ownership; `SELECT (col)`
    /// style for column grants).
    pub postgres: Vec<String>,
    /// Classes both sides let through (allowed or held by the policy and
    /// possible in PostgreSQL).
    pub reachable: Vec<Class>,
    pub rows_estimate: Option<i64>,
    pub size_bytes: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// PostgreSQL would let the upstream user do what the policy denies:
    /// only the firewall stands in the way.
    PostgresAllowsMore,
    /// The policy allows (or holds) what PostgreSQL will refuse: those
    /// statements fail upstream, approved or not.
    PolicyAllowsRefused,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub class: Option<Class>,
    /// The PostgreSQL power it is about (`TRUNCATE`, `owner`, `superuser`…).
    pub privilege: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    pub message: String,
}

/// The PostgreSQL powers that reach `class` on `t`, and whether the policy
/// should call them "more" when it denies the class.
fn powers(t: &PgTable, class: Class) -> Vec<String> {
    let mut out = Vec::new();
    let mut any = |p: &str, label: &str| {
        if t.has_any(p) {
            out.push(label.to_owned());
        }
    };
    match class {
        Class::Read => any("SELECT", "SELECT"),
        Class::Write => {
            any("INSERT", "INSERT");
            any("UPDATE", "UPDATE");
            any("DELETE", "DELETE");
        }
        Class::Ddl => {
            any("TRIGGER", "TRIGGER");
            any("REFERENCES", "REFERENCES");
        }
        Class::Destructive => any("TRUNCATE", "TRUNCATE"),
        _ => {}
    }
    if t.owns() && matches!(class, Class::Ddl | Class::Destructive) {
        out.push("owner".to_owned());
    }
    out
}

/// Everything PostgreSQL grants on `t`, for the table listing.
fn granted(t: &PgTable) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if !t.schema_usage && (t.owned || !t.privileges.is_empty()) {
        out.push("no USAGE on schema".to_owned());
    }
    if t.owned {
        out.push("owner".to_owned());
    }
    out.extend(t.privileges.iter().cloned());
    for c in &t.column_privileges {
        for p in &c.privileges {
            out.push(format!("{p} ({})", c.column));
        }
    }
    out
}

/// Would PostgreSQL refuse every statement of `class` on `t`?
fn refuses(t: &PgTable, class: Class) -> bool {
    match class {
        // An unbounded DELETE or UPDATE is destructive too.
        Class::Destructive => {
            powers(t, class).is_empty() && !t.has_any("DELETE") && !t.has_any("UPDATE")
        }
        _ => powers(t, class).is_empty(),
    }
}

/// Per-table reach and the flags, for `identity` acting in `role`.
pub fn intersect(
    engine: &Engine,
    identity: &str,
    role: &str,
    pg: &PgUser,
) -> (Vec<TableReach>, Vec<Finding>) {
    let mut reach = Vec::with_capacity(pg.tables.len());
    // (kind, class, privilege) -> tables
    let mut groups: Vec<((FindingKind, Class, String), Vec<String>)> = Vec::new();
    let mut add = |key: (FindingKind, Class, String), table: &str| match groups
        .iter_mut()
        .find(|(k, _)| *k == key)
    {
        Some((_, v)) => v.push(table.to_owned()),
        None => groups.push((key, vec![table.to_owned()])),
    };
    for t in &pg.tables {
        let name = TableName::new(&t.schema, &t.name);
        let qualified = t.qualified();
        let mut policy = BTreeMap::new();
        let mut reachable = Vec::new();
        for class in TABLE_CLASSES {
            let d = Decision::from(
                engine
                    .decide_class(identity, role, class, std::slice::from_ref(&name))
                    .action,
            );
            policy.insert(class, d);
            let powers = powers(t, class);
            if d == Decision::Deny {
                for p in powers {
                    add((FindingKind::PostgresAllowsMore, class, p), &qualified);
                }
            } else if pg.superuser || !refuses(t, class) {
                reachable.push(class);
            } else if !pg.superuser {
                add(
                    (FindingKind::PolicyAllowsRefused, class, String::new()),
                    &qualified,
                );
            }
        }
        reach.push(TableReach {
            table: qualified,
            kind: t.kind.clone(),
            policy,
            postgres: granted(t),
            reachable,
            rows_estimate: t.rows_estimate,
            size_bytes: t.size_bytes,
        });
    }
    let mut findings = role_findings(engine, identity, role, pg);
    for ((kind, class, privilege), tables) in groups {
        findings.push(table_finding(pg, role, kind, class, privilege, tables));
    }
    (reach, findings)
}

fn table_finding(
    pg: &PgUser,
    role: &str,
    kind: FindingKind,
    class: Class,
    privilege: String,
    tables: Vec<String>,
) -> Finding {
    let n = tables.len();
    let shown = listed(&tables);
    let message = match kind {
        FindingKind::PostgresAllowsMore => {
            let what = if privilege == "owner" {
                "owns".to_owned()
            } else {
                format!("has {privilege} on")
            };
            format!(
                "{} {what} {} the policy denies {class} statements on: {shown}",
                pg.user,
                tables_word(n)
            )
        }
        FindingKind::PolicyAllowsRefused => format!(
            "role {role} lets {class} statements through on {} where PostgreSQL refuses them to {}: {shown}",
            tables_word(n),
            pg.user
        ),
    };
    Finding {
        kind,
        class: Some(class),
        privilege: (!privilege.is_empty()).then_some(privilege),
        tables,
        message,
    }
}

/// Flags about the user as a whole: attributes and `CREATE` rights.
fn role_findings(engine: &Engine, identity: &str, role: &str, pg: &PgUser) -> Vec<Finding> {
    let denied =
        |class: Class| engine.decide_class(identity, role, class, &[]).action == Action::Deny;
    let mut out = Vec::new();
    let mut flag = |class: Class, privilege: &str, message: String| {
        out.push(Finding {
            kind: FindingKind::PostgresAllowsMore,
            class: Some(class),
            privilege: Some(privilege.to_owned()),
            tables: Vec::new(),
            message,
        })
    };
    let user = &pg.user;
    if pg.superuser {
        flag(
            Class::Privileged,
            "superuser",
            format!(
                "{user} is a superuser: PostgreSQL checks no privilege for it, only the firewall stands in the way"
            ),
        );
    }
    if pg.bypassrls {
        flag(
            Class::Read,
            "bypassrls",
            format!(
                "{user} has BYPASSRLS: row-level security policies do not limit what it reads or changes"
            ),
        );
    }
    if pg.createrole && denied(Class::Privileged) {
        flag(
            Class::Privileged,
            "createrole",
            format!("{user} has CREATEROLE: it may create roles and grant their membership"),
        );
    }
    if pg.createdb && denied(Class::Ddl) {
        flag(
            Class::Ddl,
            "createdb",
            format!("{user} has CREATEDB, while the policy denies ddl"),
        );
    }
    if pg.replication && denied(Class::Privileged) {
        flag(
            Class::Privileged,
            "replication",
            format!("{user} has REPLICATION: it may stream every table's changes"),
        );
    }
    if denied(Class::Privileged) {
        for (role, what) in SERVER_ROLES {
            if pg.member_of.iter().any(|m| m == role) {
                flag(
                    Class::Privileged,
                    role,
                    format!("{user} is a member of {role}: it may {what}"),
                );
            }
        }
    }
    if denied(Class::Ddl) {
        if pg.create_on_database {
            flag(
                Class::Ddl,
                "CREATE (database)",
                format!(
                    "{user} may create schemas in database {}, while the policy denies ddl",
                    pg.database
                ),
            );
        }
        if !pg.create_in_schemas.is_empty() {
            flag(
                Class::Ddl,
                "CREATE (schema)",
                format!(
                    "{user} may create objects in schema {}, while the policy denies ddl",
                    pg.create_in_schemas.join(", ")
                ),
            );
        }
    }
    out
}

/// Predefined roles whose members reach the server itself, and what they
/// may do there (`pg_read_all_data` and `pg_write_all_data` show in the
/// table privileges already).
const SERVER_ROLES: [(&str, &str); 4] = [
    (
        "pg_execute_server_program",
        "run programs on the database server (COPY ... PROGRAM)",
    ),
    (
        "pg_read_server_files",
        "read any file the database server can (COPY ... FROM 'file')",
    ),
    (
        "pg_write_server_files",
        "write files on the database server (COPY ... TO 'file')",
    ),
    ("pg_signal_backend", "cancel and terminate other sessions"),
];

/// Scope patterns that match none of the tables PostgreSQL shows. The
/// system schemas are not listed, so patterns naming them are not judged;
/// nor is anything when the listing was cut short.
pub fn empty_patterns(patterns: &[String], pg: &PgUser) -> Vec<Finding> {
    if pg.tables_truncated {
        return Vec::new();
    }
    patterns
        .iter()
        .filter(|p| !p.starts_with("pg_") && !p.starts_with("information_schema."))
        .filter(|p| {
            let Ok(scope) = crate::policy::engine::Scope::compile(std::slice::from_ref(p)) else {
                return false;
            };
            !pg.tables
                .iter()
                .any(|t| scope.allows(&TableName::new(&t.schema, &t.name)))
        })
        .map(|p| Finding {
            kind: FindingKind::PolicyAllowsRefused,
            class: None,
            privilege: None,
            tables: Vec::new(),
            message: format!(
                "tables pattern {p:?} matches no table {} can see in database {}",
                pg.user, pg.database
            ),
        })
        .collect()
}

fn tables_word(n: usize) -> String {
    if n == 1 {
        "1 table".to_owned()
    } else {
        format!("{n} tables")
    }
}

/// Up to eight names, then how many more.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut out = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::inventory::catalog::ColumnPrivilege;
    use crate::policy::PolicySet;

    const POLICY: &str = r#"
[roles.r]
upstream_user = "u"
allow = ["read", "write"]
deny = ["destructive", "ddl"]
tables = ["public.*"]
[identities.i]
kind = "agent"
roles = ["r"]
"#;

    fn engine() -> Engine {
        let mut set = PolicySet::default();
        set.add_file(Path::new("p.toml"), POLICY).unwrap();
        set.validate().unwrap();
        Engine::uncached(Arc::new(set)).unwrap()
    }

    fn table(schema: &str, name: &str, privileges: &[&str], owned: bool) -> PgTable {
        PgTable {
            schema: schema.into(),
            name: name.into(),
            kind: "table".into(),
            owner: "someone".into(),
            owned,
            privileges: privileges.iter().map(|p| p.to_string()).collect(),
            schema_usage: true,
            rows_estimate: Some(10),
            ..PgTable::default()
        }
    }

    fn user(tables: Vec<PgTable>) -> PgUser {
        PgUser {
            user: "u".into(),
            database: "d".into(),
            tables,
            ..PgUser::default()
        }
    }

    type Key<'a> = (FindingKind, Option<Class>, Option<&'a str>, Vec<&'a str>);

    fn keys(findings: &[Finding]) -> Vec<Key<'_>> {
        findings
            .iter()
            .map(|f| {
                (
                    f.kind,
                    f.class,
                    f.privilege.as_deref(),
                    f.tables.iter().map(String::as_str).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn privileges_beyond_the_policy_and_short_of_it_are_flagged() {
        use FindingKind::*;
        let pg = user(vec![
            // Everything the policy allows, and TRUNCATE it denies.
            table(
                "public",
                "a",
                &["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"],
                false,
            ),
            // Owned: DROP and ALTER, both denied.
            table("public", "b", &["SELECT", "INSERT"], true),
            // Read only: the policy's write is refused upstream.
            table("public", "c", &["SELECT"], false),
            // Outside the scope: reading it is more than the policy.
            table("other", "d", &["SELECT"], false),
        ]);
        let (reach, findings) = intersect(&engine(), "i", "r", &pg);
        assert_eq!(
            keys(&findings),
            vec![
                (
                    PostgresAllowsMore,
                    Some(Class::Destructive),
                    Some("TRUNCATE"),
                    vec!["public.a"]
                ),
                (
                    PostgresAllowsMore,
                    Some(Class::Ddl),
                    Some("owner"),
                    vec!["public.b"]
                ),
                (
                    PostgresAllowsMore,
                    Some(Class::Destructive),
                    Some("owner"),
                    vec!["public.b"]
                ),
                (
                    PolicyAllowsRefused,
                    Some(Class::Write),
                    None,
                    vec!["public.c"]
                ),
                (
                    PostgresAllowsMore,
                    Some(Class::Read),
                    Some("SELECT"),
                    vec!["other.d"]
                ),
            ]
        );
        assert_eq!(reach[0].reachable, vec![Class::Read, Class::Write]);
        assert_eq!(reach[2].reachable, vec![Class::Read]);
        assert!(reach[3].reachable.is_empty());
        assert_eq!(reach[1].postgres, vec!["owner", "SELECT", "INSERT"]);
    }

    #[test]
    fn column_grants_count_and_a_schema_without_usage_grants_nothing() {
        let mut col = table("public", "a", &[], false);
        col.column_privileges = vec![ColumnPrivilege {
            column: "status".into(),
            privileges: vec!["SELECT".into(), "UPDATE".into()],
        }];
        let mut unreachable = table("public", "b", &["SELECT", "TRUNCATE"], false);
        unreachable.schema_usage = false;
        let (reach, findings) = intersect(&engine(), "i", "r", &user(vec![col, unreachable]));
        assert_eq!(reach[0].reachable, vec![Class::Read, Class::Write]);
        assert_eq!(
            reach[0].postgres,
            vec!["SELECT (status)", "UPDATE (status)"]
        );
        // No USAGE: TRUNCATE is not "more", and read/write are refused.
        assert!(reach[1].reachable.is_empty());
        assert_eq!(reach[1].postgres[0], "no USAGE on schema");
        assert!(
            findings
                .iter()
                .all(|f| f.kind == FindingKind::PolicyAllowsRefused && f.tables == ["public.b"]),
            "{findings:?}"
        );
    }

    #[test]
    fn role_attributes_are_flagged_when_the_policy_denies_what_they_allow() {
        let mut pg = user(vec![]);
        pg.superuser = true;
        pg.bypassrls = true;
        pg.createrole = true;
        pg.createdb = true;
        pg.create_in_schemas = vec!["public".into()];
        pg.member_of = vec!["pg_read_server_files".into(), "app_readers".into()];
        let (_, findings) = intersect(&engine(), "i", "r", &pg);
        let privileges: Vec<&str> = findings
            .iter()
            .filter_map(|f| f.privilege.as_deref())
            .collect();
        assert_eq!(
            privileges,
            vec![
                "superuser",
                "bypassrls",
                "createrole",
                "createdb",
                "pg_read_server_files",
                "CREATE (schema)"
            ]
        );
        let patterns = ["public.*".into(), "pg_catalog.pg_stats".into()];
        let empty = empty_patterns(&patterns, &pg);
        assert_eq!(empty.len(), 1, "{empty:?}");
        assert!(
            empty[0]
                .message
                .contains("\"public.*\" matches no table u can see")
        );
        pg.tables_truncated = true;
        assert!(empty_patterns(&patterns, &pg).is_empty());
    }
}
