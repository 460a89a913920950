//! `veilctl check`: the classifier and policy engine, offline.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use infraveil::classify::Analysis;
use infraveil::policy::check::CheckError;
use infraveil::policy::{Action, PolicySet, Verdict};
use serde_json::json;

/// Returns the exit code: 0, or 1 when not allowed.
pub fn run(
    sql: &str,
    identity: Option<&str>,
    role: Option<&str>,
    dir: &Path,
    json_out: bool,
) -> anyhow::Result<i32> {
    let Some(identity) = identity else {
        print(&infraveil::classify::classify(sql), None, json_out);
        return Ok(0);
    };
    if !dir.is_dir() {
        bail!("{}", missing_dir(dir));
    }
    let set = PolicySet::load_dir(dir)
        .with_context(|| format!("cannot load policies from {}", dir.display()))?;
    let checked = match infraveil::policy::check::check(Arc::new(set), sql, Some(identity), role) {
        Ok(c) => c,
        Err(CheckError::UnknownIdentity(i)) => {
            bail!("identity {i} is not defined in {}", dir.display())
        }
        Err(CheckError::NoRole(i)) => bail!("identity {i} may hold no role; pass --role"),
        Err(e) => return Err(e.into()),
    };
    let Some(d) = checked.decided else {
        bail!("identity {identity} was not judged");
    };
    let best = (d.role, d.verdict);
    let verdicts = d.roles;
    print(
        &checked.analysis,
        Some((identity, &best, &verdicts)),
        json_out,
    );
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
