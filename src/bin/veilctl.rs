//! `veilctl`: the admin CLI. `check` works offline on policy files; the
//! other commands talk to the daemon's admin API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use reqwest::StatusCode;

#[derive(Parser)]
#[command(name = "veilctl", version, about = "Infraveil admin CLI")]
struct Cli {
    #[arg(long, env = "VEIL_ADMIN_URL", global = true)]
    admin_url: Option<String>,
    #[arg(long, env = "VEIL_ADMIN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the daemon's admin API answers (and, with a token, that the
    /// token is accepted).
    Health,
    /// Classify SQL offline and, with an identity, decide it as the proxy
    /// would. Exits 1 when the decision is deny or hold.
    Check {
        /// The SQL text (several statements allowed).
        sql: String,
        /// Decide for this identity.
        #[arg(long)]
        identity: Option<String>,
        /// The role the identity acts in; default: its standing role, or
        /// every role it may be granted.
        #[arg(long)]
        role: Option<String>,
        /// Policy directory.
        #[arg(long, env = "VEIL_POLICIES", default_value = "policies")]
        policies: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Check {
        sql,
        identity,
        role,
        policies,
    } = &cli.command
    {
        let code = check::run(
            sql,
            identity.as_deref(),
            role.as_deref(),
            policies,
            cli.output == Output::Json,
        )?;
        std::process::exit(code);
    }
    let base = cli
        .admin_url
        .context("set --admin-url or VEIL_ADMIN_URL")?
        .trim_end_matches('/')
        .to_owned();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    match cli.command {
        Command::Health => {
            let resp = http
                .get(format!("{base}/healthz"))
                .send()
                .with_context(|| format!("cannot reach the admin API at {base}"))?;
            if resp.status() != StatusCode::OK {
                bail!("admin API at {base} answered {}", resp.status());
            }
            let Some(token) = cli.token else {
                println!("ok");
                return Ok(());
            };
            let resp = http
                .get(format!("{base}/metrics"))
                .bearer_auth(token)
                .send()
                .with_context(|| format!("cannot reach the admin API at {base}"))?;
            match resp.status() {
                StatusCode::OK => println!("ok (token accepted)"),
                StatusCode::UNAUTHORIZED => bail!("the admin token was rejected"),
                other => bail!("admin API answered {other}"),
            }
        }
        Command::Check { .. } => unreachable!("handled above"),
    }
    Ok(())
}

mod check {
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
}
