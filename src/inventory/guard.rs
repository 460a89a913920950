//! `veilctl policy init`: a least-privilege guard config (one role and one
//! identity, TOML with comments saying why) for a kind of identity, or the
//! narrowest one that would have let through everything an identity ran
//! (from the audit log: its classes and tables, destructive ones held).
//!
//! What it prints is proven before it is printed: merged with the
//! existing policies, it loads with the real loader, and the engine gives
//! the kind's typical statements the decisions the comments promise.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::InventoryError;
use super::usage::IdentityUse;
use crate::classify::{Class, TableName};
use crate::policy::{Action, ApprovalMode, Engine, Kind, PolicySet, Prepared};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GuardRequest {
    pub kind: Kind,
    pub identity: String,
    /// `schema.table` globs; default `public.*` (or what the audit saw).
    pub tables: Vec<String>,
    pub upstream_user: Option<String>,
    pub approvers: Vec<String>,
    /// What the identity actually ran, for `--from-audit`.
    pub observed: Option<Observed>,
}

/// What the audit log shows an identity ran.
#[derive(Debug, Clone)]
pub struct Observed {
    pub identity: String,
    pub since: String,
    pub usage: IdentityUse,
}

/// The printed config and the check it passed.
#[derive(Debug, Clone)]
pub struct Guard {
    pub role: String,
    pub toml: String,
    /// (statement, decision) pairs the engine gave the generated config.
    pub checks: Vec<(String, Action)>,
}

/// A kind's class lists and defaults.
struct Template {
    allow: Vec<Class>,
    approve: Vec<Class>,
    mode: Option<ApprovalMode>,
    max_ttl: Option<&'static str>,
    why: &'static str,
}

fn template(kind: Kind) -> Template {
    use Class::*;
    match kind {
        Kind::Agent => Template {
            allow: vec![Read],
            approve: vec![Write, Destructive],
            mode: Some(ApprovalMode::Defer),
            max_ttl: Some("1h"),
            why: "an agent reads freely; every change waits for a human, and it gets an answer at once (defer) rather than a hung session",
        },
        Kind::Ci => Template {
            allow: vec![Read, Write, Ddl],
            approve: vec![Destructive],
            mode: Some(ApprovalMode::Defer),
            max_ttl: Some("30m"),
            why: "a pipeline migrates and writes; anything that destroys data waits for a human",
        },
        Kind::Human => Template {
            allow: vec![Read],
            approve: vec![Write, Ddl, Destructive],
            mode: Some(ApprovalMode::Wait),
            max_ttl: Some("8h"),
            why: "a person mostly reads; changes are held for a colleague while the session waits",
        },
        Kind::Service => Template {
            allow: vec![Read, Write],
            approve: vec![],
            mode: None,
            max_ttl: None,
            why: "a service reads and writes its own tables and nothing else; it never changes the schema or destroys data",
        },
    }
}

/// Build the config, merge it with `existing` (the policy directory it is
/// meant for, if any), load and check it.
pub fn generate(req: &GuardRequest, existing: Option<&PolicySet>) -> Result<Guard, InventoryError> {
    let invalid = |m: String| InventoryError::Invalid(m);
    if req.identity.trim().is_empty() {
        return Err(invalid("--identity must not be empty".into()));
    }
    if existing.is_some_and(|s| s.identity(&req.identity).is_some()) {
        return Err(invalid(format!(
            "identity {} is already defined in the policies; pick a new name (policy init writes a new identity)",
            req.identity
        )));
    }
    let role = format!("{}-guard", req.identity);
    if existing.is_some_and(|s| s.role(&role).is_some()) {
        return Err(invalid(format!(
            "role {role} is already defined in the policies"
        )));
    }
    let (allow, approve, tables, from) = match &req.observed {
        Some(o) => observed_lists(o, &req.tables)?,
        None => {
            let t = template(req.kind);
            let tables = if req.tables.is_empty() {
                vec!["public.*".to_owned()]
            } else {
                req.tables.clone()
            };
            (t.allow, t.approve, tables, None)
        }
    };
    if req.kind == Kind::Service && !approve.is_empty() {
        return Err(invalid(format!(
            "{} ran {} statements, which a service's standing role cannot hold for approval; use --kind ci or agent",
            req.identity,
            names(&approve)
        )));
    }
    let approvers = approvers(req, existing, !approve.is_empty())?;
    let text = render(
        req, &role, &allow, &approve, &tables, &approvers, existing, from,
    );
    let mut set = existing.cloned().unwrap_or_default();
    set.add_file(Path::new("<policy init>"), &text)?;
    set.validate()?;
    let checks = check(req, &role, Arc::new(set), &allow, &approve, &tables)?;
    let mut toml = text;
    toml.push_str("\n# What `veilctl check` decides with this config:\n");
    for (sql, action) in &checks {
        toml.push_str(&format!("#   {:<5} {sql}\n", action.as_str()));
    }
    Ok(Guard { role, toml, checks })
}

/// Class lists and scope from what the identity ran: reads, writes and
/// schema changes it ran are allowed, anything more severe is held.
#[allow(clippy::type_complexity)]
fn observed_lists(
    o: &Observed,
    tables: &[String],
) -> Result<(Vec<Class>, Vec<Class>, Vec<String>, Option<String>), InventoryError> {
    let seen = &o.usage.ran_classes;
    if seen.is_empty() {
        return Err(InventoryError::Invalid(format!(
            "the audit log shows no statement {} ran since {} (was it allowed anything?)",
            o.identity, o.since
        )));
    }
    let allow: Vec<Class> = seen
        .iter()
        .copied()
        .filter(|c| matches!(c, Class::Read | Class::Write | Class::Ddl))
        .collect();
    let approve: Vec<Class> = seen
        .iter()
        .copied()
        .filter(|c| !allow.contains(c))
        .collect();
    let scope: Vec<String> = if tables.is_empty() {
        let mut t: BTreeSet<String> = o
            .usage
            .tables
            .iter()
            .filter(|t| !t.starts_with("pg_catalog.") && !t.starts_with("information_schema."))
            .map(|t| glob_escape(t))
            .collect();
        if t.is_empty() {
            t.insert("public.*".to_owned());
        }
        t.into_iter().collect()
    } else {
        tables.to_vec()
    };
    let from = format!(
        "from what {} ran since {} ({} statements; classes {})",
        o.identity,
        o.since,
        o.usage.statements,
        names(&seen.iter().copied().collect::<Vec<_>>())
    );
    Ok((allow, approve, scope, Some(from)))
}

/// A seen table name as a scope pattern that matches only it.
fn glob_escape(t: &str) -> String {
    t.chars()
        .map(|c| match c {
            '*' | '?' | '[' | ']' | '{' | '}' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect()
}

fn approvers(
    req: &GuardRequest,
    existing: Option<&PolicySet>,
    needed: bool,
) -> Result<Vec<String>, InventoryError> {
    if !needed {
        return Ok(Vec::new());
    }
    let list: Vec<String> = if !req.approvers.is_empty() {
        req.approvers.clone()
    } else {
        existing
            .map(|s| {
                s.identities
                    .keys()
                    .filter(|n| s.is_approver(n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    if list.is_empty() {
        return Err(InventoryError::Invalid(
            "this config holds statements for a human: name who may approve with --approvers A,B"
                .into(),
        ));
    }
    if list.contains(&req.identity) {
        return Err(InventoryError::Invalid(format!(
            "{} cannot approve its own statements; name someone else in --approvers",
            req.identity
        )));
    }
    Ok(list)
}

fn names(classes: &[Class]) -> String {
    classes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A TOML key: bare when it can be, quoted otherwise.
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        s.to_owned()
    } else {
        toml_str(s)
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn class_list(classes: &[Class]) -> String {
    list(
        &classes
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect::<Vec<_>>(),
    )
}

/// The table privileges beyond `SELECT` the upstream login needs for
/// what the role lets through: held statements must still work once
/// approved. `TRUNCATE` and `DROP` (ownership) are left for the operator.
fn upstream_grants(allow: &[Class], approve: &[Class]) -> &'static str {
    let lets = |c: Class| allow.contains(&c) || approve.contains(&c);
    if lets(Class::Write) {
        ", INSERT, UPDATE, DELETE"
    } else if lets(Class::Destructive) {
        ", DELETE"
    } else {
        ""
    }
}

/// `text` as `# ` comment lines of at most about 78 characters.
fn comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 78 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// A PostgreSQL login name from an identity name.
fn default_upstream(identity: &str) -> String {
    let s: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{s}_login")
}

#[allow(clippy::too_many_arguments)]
fn render(
    req: &GuardRequest,
    role: &str,
    allow: &[Class],
    approve: &[Class],
    tables: &[String],
    approvers: &[String],
    existing: Option<&PolicySet>,
    from: Option<String>,
) -> String {
    let t = template(req.kind);
    let kind = crate::policy::engine::kind_name(req.kind);
    let upstream = req
        .upstream_user
        .clone()
        .unwrap_or_else(|| default_upstream(&req.identity));
    let deny: Vec<Class> = Class::ALL
        .iter()
        .copied()
        .filter(|c| !allow.contains(c) && !approve.contains(c))
        .collect();
    let mut o = String::new();
    o.push_str(&format!(
        "# Guard config for {kind} identity {}, made by `veilctl policy init`.\n",
        req.identity
    ));
    match &from {
        Some(f) => o.push_str(&comment(&format!(
            "The narrowest policy {f}: what it ran is allowed, anything destructive (or worse) it ran is held for a human, everything else is denied."
        ))),
        None => o.push_str(&comment(&format!("Why these classes: {}.", t.why))),
    }
    o.push_str(&format!("\n[roles.{}]\n", key(role)));
    o.push_str(&format!(
        "# The PostgreSQL login for this role. Make it least-privilege too, so a\n# classifier miss cannot exceed it, e.g. (if it does not exist yet):\n#   CREATE ROLE {upstream} LOGIN PASSWORD '...';\n#   GRANT SELECT{} ON <the tables below> TO {upstream};\n# and give the firewall its password in upstream.passwords.\nupstream_user = {}\n",
        upstream_grants(allow, approve),
        toml_str(&upstream)
    ));
    o.push_str(&format!("allow = {}\n", class_list(allow)));
    if !approve.is_empty() {
        o.push_str(&format!(
            "# Held until one of the approvers says yes; never the requester.\napprove = {}\n",
            class_list(approve)
        ));
    }
    o.push_str(&format!(
        "# Denied outright (written out so a kind default never widens it).\ndeny = {}\n",
        class_list(&deny)
    ));
    o.push_str(&format!(
        "# Statements touching any other table are denied. Narrow it to what the task needs.\ntables = {}\n",
        list(tables)
    ));
    if !approve.is_empty() {
        o.push_str(&format!("approvers = {}\n", list(approvers)));
        if let Some(mode) = t.mode {
            let m = match mode {
                ApprovalMode::Wait => "wait",
                ApprovalMode::Defer => "defer",
            };
            o.push_str(&format!("mode = \"{m}\"\n"));
        }
    }
    if let Some(ttl) = t.max_ttl {
        o.push_str(&format!(
            "# No standing access: grants of this role last at most this long.\nmax_ttl = \"{ttl}\"\n"
        ));
    }
    o.push_str(&format!(
        "\n[identities.{}]\nkind = \"{kind}\"\n",
        key(&req.identity)
    ));
    if req.kind == Kind::Service {
        o.push_str(&format!(
            "# A service holds its role without a grant (the only kind that may).\n# Prefer grants if it can renew them.\nstanding = {}\n",
            toml_str(role)
        ));
    } else {
        o.push_str(&format!(
            "# Gets the role only through a grant:\n#   veilctl grants issue --identity {} --role {role} --ttl {} --reason TICKET\nroles = {}\n",
            req.identity,
            t.max_ttl.unwrap_or("1h"),
            list(&[role.to_owned()])
        ));
    }
    for a in approvers {
        if existing.is_none_or(|s| s.identity(a).is_none()) {
            o.push_str(&format!(
                "\n# Approver {a} is not defined in the policies this was made against.\n[identities.{}]\nkind = \"human\"\n",
                key(a)
            ));
        }
    }
    o
}

/// Decide the kind's typical statements (or, from the audit, a statement
/// of each class it ran) against the loaded config; any surprise is a bug
/// here, reported rather than printed.
fn check(
    req: &GuardRequest,
    role: &str,
    set: Arc<PolicySet>,
    allow: &[Class],
    approve: &[Class],
    tables: &[String],
) -> Result<Vec<(String, Action)>, InventoryError> {
    let engine = Engine::uncached(set)?;
    let table = example_table(tables);
    let statements = [
        (format!("SELECT * FROM {table}"), Class::Read),
        (
            format!("UPDATE {table} SET status = 'done' WHERE id = 42"),
            Class::Write,
        ),
        (
            format!("ALTER TABLE {table} ADD COLUMN note text"),
            Class::Ddl,
        ),
        (format!("TRUNCATE {table}"), Class::Destructive),
        (
            "ALTER SYSTEM SET work_mem = '1GB'".to_owned(),
            Class::Privileged,
        ),
    ];
    let mut out = Vec::new();
    for (sql, class) in statements {
        let analysis = engine.analyze(&sql);
        let got = engine
            .judge(&req.identity, role, &analysis, &Prepared::default())
            .overall;
        let want = if allow.contains(&class) {
            Action::Allow
        } else if approve.contains(&class) {
            Action::Hold
        } else {
            Action::Deny
        };
        if got.action != want || got.class != class {
            return Err(InventoryError::Invalid(format!(
                "internal error: the generated config gives {sql:?} {} ({}: {}), expected {}",
                got.action.as_str(),
                got.rule,
                got.reason,
                want.as_str()
            )));
        }
        out.push((sql, got.action));
    }
    Ok(out)
}

/// A table the scope covers, for the example statements.
fn example_table(tables: &[String]) -> String {
    let first = tables.first().map(String::as_str).unwrap_or("public.*");
    let (schema, name) = first.split_once('.').unwrap_or(("public", first));
    let concrete = |s: &str, fill: &str| -> String {
        let plain: String = s
            .chars()
            .filter(|c| !matches!(c, '[' | ']' | '{' | '}'))
            .collect::<String>()
            .replace(['*', '?'], fill);
        if plain.is_empty() {
            fill.to_owned()
        } else {
            plain
        }
    };
    let t = TableName::new(&concrete(schema, "public"), &concrete(name, "orders"));
    quote_path(&t)
}

fn quote_path(t: &TableName) -> String {
    let q = |s: &str| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
        {
            s.to_owned()
        } else {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
    };
    format!("{}.{}", q(&t.schema), q(&t.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_policies() -> PolicySet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        PolicySet::load_dir(&dir).unwrap()
    }

    fn req(kind: Kind, identity: &str) -> GuardRequest {
        GuardRequest {
            kind,
            identity: identity.into(),
            tables: vec![],
            upstream_user: None,
            approvers: vec![],
            observed: None,
        }
    }

    #[test]
    fn every_kind_loads_and_checks_against_the_example_policies() {
        let set = example_policies();
        for kind in [Kind::Agent, Kind::Ci, Kind::Human, Kind::Service] {
            let g = generate(&req(kind, "new-one"), Some(&set)).unwrap();
            let mut merged = set.clone();
            merged.add_file(Path::new("g.toml"), &g.toml).unwrap();
            merged.validate().unwrap();
            assert_eq!(g.checks.len(), 5, "{kind:?}");
            // Privileged is denied for every kind.
            assert_eq!(g.checks[4].1, Action::Deny);
        }
        let agent = generate(&req(Kind::Agent, "new-one"), Some(&set)).unwrap();
        let actions: Vec<Action> = agent.checks.iter().map(|c| c.1).collect();
        use Action::*;
        assert_eq!(actions, vec![Allow, Hold, Deny, Hold, Deny]);
        // Approvers came from the policies (oncall approves there).
        assert!(
            agent.toml.contains("approvers = [\"oncall\"]"),
            "{}",
            agent.toml
        );
    }

    #[test]
    fn standalone_config_defines_its_approvers_and_odd_names_are_quoted() {
        let mut r = req(Kind::Human, "ana maria");
        r.approvers = vec!["dba".into()];
        r.tables = vec!["sales.*".into()];
        let g = generate(&r, None).unwrap();
        assert!(g.toml.contains("[identities.\"ana maria\"]"), "{}", g.toml);
        assert!(g.toml.contains("[identities.dba]"), "{}", g.toml);
        assert!(g.toml.contains("SELECT * FROM sales.orders"), "{}", g.toml);
    }

    #[test]
    fn bad_requests_say_what_to_do() {
        let set = example_policies();
        let e = generate(&req(Kind::Agent, "alice"), Some(&set)).unwrap_err();
        assert!(e.to_string().contains("already defined"), "{e}");
        let e = generate(&req(Kind::Agent, "x"), None).unwrap_err();
        assert!(e.to_string().contains("--approvers"), "{e}");
        let mut r = req(Kind::Agent, "x");
        r.approvers = vec!["x".into()];
        let e = generate(&r, None).unwrap_err();
        assert!(e.to_string().contains("cannot approve its own"), "{e}");
        r.approvers = vec!["oncall".into()];
        r.tables = vec!["nodot".into()];
        let e = generate(&r, Some(&set)).unwrap_err();
        assert!(e.to_string().contains("schema.table"), "{e}");
    }

    #[test]
    fn from_audit_allows_what_ran_and_holds_destruction() {
        let mut usage = IdentityUse {
            statements: 3,
            ..IdentityUse::default()
        };
        usage
            .ran_classes
            .extend([Class::Read, Class::Write, Class::Destructive]);
        usage
            .tables
            .extend(["public.orders".to_owned(), "pg_catalog.pg_class".to_owned()]);
        let mut r = req(Kind::Ci, "new-bot");
        r.observed = Some(Observed {
            identity: "deploy-bot".into(),
            since: "7d".into(),
            usage,
        });
        let g = generate(&r, Some(&example_policies())).unwrap();
        assert!(
            g.toml.contains("allow = [\"read\", \"write\"]"),
            "{}",
            g.toml
        );
        assert!(g.toml.contains("approve = [\"destructive\"]"), "{}", g.toml);
        assert!(
            g.toml.contains("tables = [\"public.orders\"]"),
            "{}",
            g.toml
        );
        let actions: Vec<Action> = g.checks.iter().map(|c| c.1).collect();
        use Action::*;
        assert_eq!(actions, vec![Allow, Allow, Deny, Hold, Deny]);
    }
}
