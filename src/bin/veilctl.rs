//! `veilctl`: the admin CLI over the admin API. Grants, approvals and audit
//! commands arrive with those features; today it checks that the daemon is
//! reachable and that the token is accepted.

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the daemon's admin API answers (and, with a token, that the
    /// token is accepted).
    Health,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
    }
    Ok(())
}
