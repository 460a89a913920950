//! `veilctl policy init`: print a least-privilege guard config, checked
//! against the policy directory it is meant for. Offline, except
//! `--from-audit`, which asks the daemon what that identity ran.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use infraveil::inventory::guard::{self, GuardRequest, Observed};
use infraveil::inventory::usage::IdentityUse;
use infraveil::policy::{Kind, PolicySet};

use crate::api::Api;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Print a guard config (a role and an identity, with comments) that
    /// loads and passes `veilctl check` for the kind's typical statements.
    Init {
        #[arg(long, value_parser = ["agent", "ci", "human", "service"])]
        kind: String,
        /// The new identity's name.
        #[arg(long)]
        identity: String,
        /// `schema.table` globs, comma-separated (default `public.*`, or the
        /// tables seen with --from-audit).
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// The PostgreSQL login for the role (default: IDENTITY_login).
        #[arg(long)]
        upstream_user: Option<String>,
        /// Who may approve held statements (default: the approvers the
        /// policy directory names).
        #[arg(long, value_delimiter = ',')]
        approvers: Vec<String>,
        /// Propose the narrowest policy covering what this identity ran
        /// (from the daemon's audit log).
        #[arg(long)]
        from_audit: Option<String>,
        /// With --from-audit: from this long ago (or an RFC 3339 time).
        #[arg(long, default_value = "7d", requires = "from_audit")]
        since: String,
        /// The policy directory the config is meant for (checked against
        /// it when it exists).
        #[arg(long, env = "VEIL_POLICIES", default_value = "policies")]
        policies: PathBuf,
    },
}

pub fn run(
    api: Option<&Api>,
    command: PolicyCommand,
    api_problem: Option<String>,
) -> anyhow::Result<()> {
    let PolicyCommand::Init {
        kind,
        identity,
        tables,
        upstream_user,
        approvers,
        from_audit,
        since,
        policies,
    } = command;
    let kind: Kind = serde_json::from_value(serde_json::Value::String(kind.clone()))
        .with_context(|| format!("unknown kind {kind:?}"))?;
    let existing = if policies.is_dir() {
        Some(
            PolicySet::load_dir(&policies)
                .with_context(|| format!("cannot load policies from {}", policies.display()))?,
        )
    } else {
        None
    };
    let observed = match from_audit {
        Some(who) => {
            let Some(api) = api else {
                bail!(
                    "--from-audit reads the daemon's audit log: {}",
                    api_problem.unwrap_or_default()
                );
            };
            let usage: IdentityUse = crate::review::get_json(
                api,
                "/v1/inventory/usage",
                &[("identity", who.clone()), ("since", since.clone())],
            )?;
            Some(Observed {
                identity: who,
                since,
                usage,
            })
        }
        None => None,
    };
    let req = GuardRequest {
        kind,
        identity,
        tables: tables
            .into_iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        upstream_user,
        approvers: approvers
            .into_iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect(),
        observed,
    };
    let g = guard::generate(&req, existing.as_ref())?;
    print!("{}", g.toml);
    if existing.is_none() {
        eprintln!(
            "note: no policy directory at {}; the config was checked on its own",
            policies.display()
        );
    }
    Ok(())
}
