//! `infraveil`: the firewall daemon (`serve`), the sandbox (`demo`), the
//! MCP server for AI agents (`mcp`) and a container health probe
//! (`healthcheck`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use infraveil::config::Config;
use infraveil::demo::{self, DemoOptions};
use infraveil::policy::PolicyInspector;

#[derive(Parser)]
#[command(
    name = "infraveil",
    version = infraveil::VERSION,
    about = "PostgreSQL wire-protocol firewall"
)]
struct Cli {
    /// How the daemon logs to stderr: `text` for people, `json` for a log
    /// pipeline (one object per line, with the session's span fields).
    #[arg(long, global = true, env = "INFRAVEIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the firewall with a config file.
    Serve {
        #[arg(long, default_value = "infraveil.toml")]
        config: PathBuf,
    },
    /// Start a throwaway PostgreSQL with sample data and the firewall in front.
    Demo {
        /// PostgreSQL listener port of the firewall (0 picks a free one).
        #[arg(long, default_value_t = 6432)]
        port: u16,
        /// Admin API port (0 picks a free one).
        #[arg(long, default_value_t = 6433)]
        admin_port: u16,
        /// Slack-compatible webhook for approval requests.
        #[arg(long)]
        webhook_url: Option<String>,
        /// Also write the printed variables here as `export NAME='value'`
        /// lines (mode 0600), for `source PATH` in another terminal. They are
        /// always written to `$VEIL_DATA_DIR/env`; both go when the demo stops.
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
    /// An MCP server over stdio for AI agents, connecting through the
    /// firewall with the agent's own grant (tools: query, check, propose,
    /// status, describe, whoami). Logs go to stderr; stdout is the protocol.
    Mcp {
        /// The agent's grant URL, as `veilctl grants issue` prints it.
        #[arg(
            long,
            env = "DATABASE_URL",
            hide_env_values = true,
            conflicts_with = "grant_file"
        )]
        database_url: Option<String>,
        /// A file holding the grant: `veilctl --output json grants issue`'s
        /// output, a `DATABASE_URL=...` line, or the URL alone.
        #[arg(long)]
        grant_file: Option<PathBuf>,
        /// The firewall's admin API, for check, propose, status and whoami
        /// (signed in with the same grant; no admin token).
        #[arg(long, env = "VEIL_ADMIN_URL")]
        admin_url: Option<String>,
    },
    /// Exit 0 if the admin API answers `/healthz`, 1 otherwise: a
    /// container HEALTHCHECK for images without curl.
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:6433/healthz")]
        url: String,
    },
}

fn init_tracing(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INFRAVEIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(infraveil::cli::stderr_colours()).init(),
        // One object per line: time, level, target, the event's fields,
        // and every enclosing span's (session id, identity, statement).
        LogFormat::Json => fmt
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .flatten_event(true)
            .init(),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        // No runtime, no logging: a probe runs every few seconds and its
        // output lands in `docker inspect`.
        Command::Healthcheck { url } => healthcheck(&url),
        command => {
            // The MCP server's stderr lands in the agent runtime's log:
            // rmcp's per-message lines only at debug.
            let default = match command {
                Command::Mcp { .. } => "info,rmcp=warn",
                _ => "info",
            };
            init_tracing(cli.log_format, default);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")
                .and_then(|rt| rt.block_on(run(command)))
        }
    };
    if let Err(e) = result {
        infraveil::cli::exit(e.as_ref());
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            let running = infraveil::daemon::start(&config, Arc::new(PolicyInspector::empty()))
                .await
                .context("cannot start infraveil")?;
            running.until_signal().await?;
        }
        Command::Demo {
            port,
            admin_port,
            webhook_url,
            env_file,
        } => {
            // Without a webhook, approval requests are shown right here.
            let sink: infraveil::approvals::notify::Sink = Arc::new(|text: &str| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "\n{text}");
                let _ = out.flush();
            });
            let d = demo::start(&DemoOptions {
                port,
                admin_port,
                webhook_url,
                approval_sink: Some(sink),
                env_file,
            })
            .await
            .context("cannot start the demo")?;
            // Each alone on a line, `NAME=value`: scripts read these.
            let mut out = std::io::stdout().lock();
            for (name, value) in d.env_vars() {
                writeln!(out, "{name}={value}")?;
            }
            out.flush()?;
            drop(out);
            for path in d.env_files() {
                tracing::info!("in another terminal: source {}", path.display());
            }
            tracing::info!(
                "demo running; try: psql \"$DATABASE_URL\"  (Ctrl-C stops and cleans up)"
            );
            tracing::info!(
                approver = demo::DEMO_APPROVER,
                "approval pages: sign in as this approver with VEIL_APPROVER_SECRET"
            );
            tracing::info!(
                "web console: {}/console (the approver as above, or an empty identity and VEIL_ADMIN_TOKEN)",
                d.admin_url
            );
            d.run_until_signal().await?;
        }
        Command::Mcp {
            database_url,
            grant_file,
            admin_url,
        } => {
            let database_url = match (grant_file, database_url) {
                (Some(f), _) => infraveil::mcp::url_from_grant_file(&f)?,
                (None, Some(u)) => u,
                (None, None) => return Err(infraveil::mcp::McpError::NoUrl.into()),
            };
            infraveil::mcp::run(infraveil::mcp::Options {
                database_url,
                admin_url,
            })
            .await?;
        }
        Command::Healthcheck { .. } => unreachable!("run without a runtime in main"),
    }
    Ok(())
}

fn healthcheck(url: &str) -> anyhow::Result<()> {
    infraveil::net::tls::install_default_provider();
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(url)
        .send()
        .with_context(|| format!("{url} did not answer"))?;
    if !resp.status().is_success() {
        bail!("{url} answered {}", resp.status());
    }
    Ok(())
}
