//! `veilctl check`: the classifier and policy engine, offline.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use infraveil::classify::Analysis;
use infraveil::policy::{Action, Engine, PolicySet, Prepared, Verdict};
use serde_json::json;

/// Returns the exit code: 0, or 1 when not allowed.
pub fn run(
    sql: &str,
    identity: Option<&str>,
    role: Option<&str>,
    dir: &Path,
    json_out: bool,
) -> anyhow::Result<i32> {
    let analysis = infraveil::classify::classify(sql);
    let Some(identity) = identity else {
        print(&analysis, None, json_out);
        return Ok(0);
    };
    if !dir.is_dir() {
        bail!("{}", missing_dir(dir));
    }
    let set = PolicySet::load_dir(dir)
        .with_context(|| format!("cannot load policies from {}", dir.display()))?;
    let Some(ident) = set.identity(identity) else {
        bail!("identity {identity} is not defined in {}", dir.display());
    };
    let roles: Vec<String> = match role {
        Some(r) => vec![r.to_owned()],
        None => ident
            .standing
            .iter()
            .chain(ident.roles.iter())
            .cloned()
            .collect(),
    };
    if roles.is_empty() {
        bail!("identity {identity} may hold no role; pass --role");
    }
    let engine = Engine::uncached(Arc::new(set))?;
    let verdicts: Vec<(String, Verdict)> = roles
        .into_iter()
        .map(|r| {
            let v = engine
                .judge(identity, &r, &analysis, &Prepared::default())
                .overall;
            (r, v)
        })
        .collect();
    // Across roles, the best outcome is what the identity could do.
    let rank = |a: Action| match a {
        Action::Allow => 0,
        Action::Hold => 1,
        Action::Deny => 2,
    };
    let best = verdicts
        .iter()
        .min_by_key(|(_, v)| rank(v.action))
        .cloned()
        .expect("at least one role");
    print(&analysis, Some((identity, &best, &verdicts)), json_out);
    Ok(if best.1.action == Action::Allow { 0 } else { 1 })
}

/// Where `check` looked, and how to point it elsewhere: the default
/// (`policies`, relative) only works from the repository's root.
fn missing_dir(dir: &Path) -> String {
    if dir.is_relative() {
        let cwd = std::env::current_dir()
            .map(|d| format!(" ({})", d.display()))
            .unwrap_or_default();
        return format!(
            "veilctl check looked for {}/ in the current directory{cwd} and found none; \
             run it from the repository, or pick a policy directory with --policies DIR (or VEIL_POLICIES)",
            dir.display()
        );
    }
    format!(
        "policy directory {} does not exist; pick one with --policies DIR (or VEIL_POLICIES)",
        dir.display()
    )
}

type Decided<'a> = (&'a str, &'a (String, Verdict), &'a [(String, Verdict)]);

fn print(a: &Analysis, decided: Option<Decided<'_>>, json_out: bool) {
    if json_out {
        let mut out = json!({
            "class": a.class(),
            "statements": a.statements,
        });
        if let Some((identity, (role, v), all)) = decided {
            out["identity"] = json!(identity);
            out["decision"] = json!(v.action);
            out["role"] = json!(role);
            out["rule"] = json!(v.rule);
            out["reason"] = json!(v.reason);
            if let Some(a) = &v.advice {
                out["advice"] = json!(a);
            }
            if !v.approvers.is_empty() {
                out["approvers"] = json!(v.approvers);
            }
            out["roles"] = all
                .iter()
                .map(|(r, v)| json!({"role": r, "decision": v.action, "rule": v.rule, "class": v.class, "reason": v.reason}))
                .collect();
        }
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return;
    }
    println!("class: {}", a.class());
    for (i, s) in a.statements.iter().enumerate() {
        let tables: Vec<String> = s.tables.iter().map(|t| t.to_string()).collect();
        let tables = if tables.is_empty() {
            "-".to_string()
        } else {
            tables.join(", ")
        };
        println!(
            "  {}. {:<11} {:<30} {}",
            i + 1,
            s.class.as_str(),
            tables,
            s.reason
        );
    }
    if let Some((identity, (role, v), all)) = decided {
        println!(
            "decision: {} ({identity} as {role}; rule {})",
            v.action.as_str(),
            v.rule
        );
        println!("  {}", v.reason);
        if let Some(a) = &v.advice {
            println!("  {a}");
        }
        if !v.approvers.is_empty() {
            println!("  approvers: {}", v.approvers.join(", "));
        }
        if all.len() > 1 {
            for (r, v) in all {
                println!("  as {r:<12} {:<5} {}", v.action.as_str(), v.rule);
            }
        }
    }
}
