//! `veilctl`: the admin CLI. Commands arrive with the grants, approvals and
//! audit issues; today it checks that the admin API is reachable.

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    /// Check that the daemon's admin API answers.
    Health,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Health => {
            let url = cli.admin_url.context("set --admin-url or VEIL_ADMIN_URL")?;
            let addr = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&addr)
                .with_context(|| format!("cannot reach the admin API at {url}"))?;
            write!(s, "GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            let ok = resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200");
            anyhow::ensure!(
                ok,
                "admin API answered: {}",
                resp.lines().next().unwrap_or("")
            );
            let _ = cli.token;
            println!("ok");
        }
    }
    Ok(())
}
