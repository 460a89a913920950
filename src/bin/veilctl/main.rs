//! `veilctl`: the admin CLI. `check` works offline on policy files; the
//! other commands talk to the daemon's admin API ([`api`]).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod api;
mod approvals;
mod approvers;
mod audit;
mod blast;
mod check;
mod grants;
mod guard;
mod review;
mod table;

#[derive(Parser)]
#[command(name = "veilctl", version = infraveil::VERSION, about = "Infraveil admin CLI")]
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
    /// Only `access review`.
    Csv,
}

#[derive(Subcommand)]
enum Command {
    /// Print a shell completion script: `veilctl completions bash >
    /// /etc/bash_completion.d/veilctl` (or zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    /// Just-in-time grants: expiring credentials for one identity and role.
    Grants {
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// Held statements waiting for a human.
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Approvers' own secrets for signing in on approval pages.
    Approvers {
        #[command(subcommand)]
        command: ApproversCommand,
    },
    /// The signed, hash-chained audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// What an identity could do right now and at most, policy beside
    /// PostgreSQL's own privileges.
    ///
    /// Per role: the policy's classes and scope beside what PostgreSQL
    /// itself lets the role's upstream user do, with the places they
    /// disagree flagged. Exits 1 when PostgreSQL's side could not be read.
    BlastRadius {
        #[arg(long)]
        identity: String,
        /// Only this role.
        #[arg(long)]
        role: Option<String>,
        /// The database to look in (default: the one in grants' DATABASE_URL).
        #[arg(long)]
        database: Option<String>,
    },
    /// Who could: identities, grants, standing access, last use.
    Access {
        #[command(subcommand)]
        command: review::AccessCommand,
    },
    /// Policy files: generate a least-privilege guard config.
    Policy {
        #[command(subcommand)]
        command: guard::PolicyCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print the log's Ed25519 public key (64 hex characters). Keep a copy
    /// away from the firewall: verification against it rules out re-signing.
    PublicKey {
        /// Read it from a stopped daemon's data directory instead.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// ...or from this signing key file (when `audit.key_file` is set).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// The newest record and the last signed checkpoint, as SEQ:HASH to keep
    /// elsewhere for `verify --expect-head`.
    Checkpoint,
    /// Stream records (with hashes and signatures) to stdout.
    Export {
        /// From this time: RFC 3339, a date, a duration ago (1h, 7d) or Unix ms.
        #[arg(long)]
        since: Option<String>,
        /// Up to (not including) this time.
        #[arg(long)]
        until: Option<String>,
        /// Only events about this identity (leaves gaps in the chain: verify
        /// such an export with --allow-gaps).
        #[arg(long)]
        identity: Option<String>,
        #[arg(long, value_parser = ["jsonl", "csv"], default_value = "jsonl")]
        format: String,
    },
    /// Recompute the chain, check every signature and report the first bad
    /// record. Online by default; --data-dir for a stopped daemon; --file for
    /// an export. Exits 1 when the log does not verify.
    Verify {
        #[arg(long, conflicts_with = "file")]
        data_dir: Option<PathBuf>,
        /// The signing key file, when `audit.key_file` is outside the data dir.
        #[arg(long, requires = "data_dir")]
        key_file: Option<PathBuf>,
        /// An export (JSON lines or CSV).
        #[arg(long)]
        file: Option<PathBuf>,
        /// The public key you kept (64 hex characters, or a file holding
        /// them); required with --file. For an export merged from several
        /// instances, one INSTANCE=KEY per instance (repeat the option).
        #[arg(long)]
        public_key: Vec<String>,
        /// A checkpoint kept elsewhere (SEQ:HASH): that record must be there,
        /// unchanged, so a cut tail is detected.
        #[arg(long)]
        expect_head: Option<String>,
        /// Accept missing records between records (an --identity export);
        /// each record is still checked on its own.
        #[arg(long, requires = "file")]
        allow_gaps: bool,
    },
    /// With the daemon stopped: move records after the log's last
    /// signature (which the firewall did not write) into a separate tree,
    /// so the daemon starts again. Nothing is deleted.
    SetAside {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Pending requests; with --all also decided, expired and cancelled.
    List {
        #[arg(long)]
        all: bool,
    },
    /// Approve a request: the held statement runs (once).
    Approve {
        id: String,
        /// The approver (one of the role's `approvers`, never the requester).
        #[arg(long = "as")]
        approver: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Deny a request: the client gets "denied by NAME".
    Deny {
        id: String,
        #[arg(long = "as")]
        approver: String,
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Subcommand)]
enum ApproversCommand {
    /// Give an approver a long-lived secret that signs them in on approval
    /// pages and can do nothing else (shown once).
    Enroll {
        #[arg(long)]
        identity: String,
        /// Who is enrolling them, for the audit log.
        #[arg(long, default_value = "admin")]
        by: String,
    },
    /// Approver secrets; with --all also revoked ones.
    List {
        #[arg(long)]
        all: bool,
    },
    /// Revoke an approver secret.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum GrantsCommand {
    /// Issue a grant; prints its secret and DATABASE_URL once.
    Issue {
        #[arg(long)]
        identity: String,
        #[arg(long)]
        role: String,
        /// Lifetime, e.g. 90s, 15m, 1h; capped by the role's max_ttl.
        /// May be left out only for a service's standing role.
        #[arg(long)]
        ttl: Option<String>,
        /// Why (recorded and shown in `grants list`).
        #[arg(long)]
        reason: Option<String>,
        /// Who is issuing (recorded); default: $USER.
        #[arg(long = "as", env = "USER", default_value = "admin")]
        by: String,
    },
    /// Active grants; with --all also expired and revoked ones.
    List {
        #[arg(long)]
        all: bool,
    },
    /// Revoke a grant; its live sessions end within a second.
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Who is revoking (recorded); default: $USER.
        #[arg(long = "as", env = "USER", default_value = "admin")]
        by: String,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        infraveil::cli::exit(e.as_ref());
    }
}

/// `veilctl completions SHELL`, generated from the CLI itself.
fn print_completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    // Into a buffer first: clap_complete panics on a write error, and
    // `veilctl completions bash | head` closes the pipe early.
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "veilctl", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Completions { shell } = cli.command {
        // Offline: a completion script needs no daemon.
        return print_completions(shell);
    }
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
    if cli.output == Output::Csv && !matches!(cli.command, Command::Access { .. }) {
        anyhow::bail!("--output csv is only for `veilctl access review`; use text or json");
    }
    let json_out = cli.output == Output::Json;
    infraveil::net::tls::install_default_provider();
    if let Command::Policy { command } = cli.command {
        // Offline unless --from-audit.
        let (api, problem) = match api::Api::new(cli.admin_url, cli.token) {
            Ok(a) => (Some(a), None),
            Err(e) => (None, Some(e.to_string())),
        };
        return guard::run(api.as_ref(), command, problem);
    }
    if let Command::Audit { command } = cli.command {
        // Offline forms need no admin API.
        let api = api::Api::new(cli.admin_url, cli.token).ok();
        return run_audit(api.as_ref(), command, json_out);
    }
    let api = api::Api::new(cli.admin_url, cli.token)?;
    match cli.command {
        Command::Health => {
            api.healthz()?;
            if let Some(problem) = api.token_problem() {
                println!("ok");
                eprintln!("note: {problem}");
                return Ok(());
            }
            api.get_text("/metrics")?;
            println!("ok (token accepted)");
        }
        Command::Grants { command } => match command {
            GrantsCommand::Issue {
                identity,
                role,
                ttl,
                reason,
                by,
            } => grants::issue(
                &api,
                grants::IssueArgs {
                    identity,
                    role,
                    ttl,
                    reason,
                    by,
                },
                json_out,
            )?,
            GrantsCommand::List { all } => grants::list(&api, all, json_out)?,
            GrantsCommand::Revoke { id, reason, by } => {
                grants::revoke(&api, &id, &by, reason, json_out)?
            }
        },
        Command::Approvals { command } => match command {
            ApprovalsCommand::List { all } => approvals::list(&api, all, json_out)?,
            ApprovalsCommand::Approve { id, approver, note } => {
                approvals::decide(&api, &id, &approver, note, true, json_out)?
            }
            ApprovalsCommand::Deny { id, approver, note } => {
                approvals::decide(&api, &id, &approver, note, false, json_out)?
            }
        },
        Command::Approvers { command } => match command {
            ApproversCommand::Enroll { identity, by } => {
                approvers::enroll(&api, &identity, &by, json_out)?
            }
            ApproversCommand::List { all } => approvers::list(&api, all, json_out)?,
            ApproversCommand::Revoke { id } => approvers::revoke(&api, &id, json_out)?,
        },
        Command::BlastRadius {
            identity,
            role,
            database,
        } => {
            let args = blast::Args {
                identity,
                role,
                database,
            };
            std::process::exit(blast::run(&api, &args, json_out)?);
        }
        Command::Access { command } => {
            std::process::exit(review::run(&api, &command, cli.output)?);
        }
        Command::Check { .. }
        | Command::Audit { .. }
        | Command::Policy { .. }
        | Command::Completions { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(())
}

fn run_audit(api: Option<&api::Api>, command: AuditCommand, json_out: bool) -> anyhow::Result<()> {
    let need = || {
        api.ok_or_else(|| {
            anyhow::anyhow!("no admin API address: set --admin-url or VEIL_ADMIN_URL")
        })
    };
    match command {
        AuditCommand::PublicKey { data_dir, key_file } => {
            audit::public_key(api, &audit::Offline { data_dir, key_file }, json_out)
        }
        AuditCommand::Checkpoint => audit::checkpoint(need()?, json_out),
        AuditCommand::Export {
            since,
            until,
            identity,
            format,
        } => audit::export(
            need()?,
            audit::ExportArgs {
                since,
                until,
                identity,
                format,
            },
        ),
        AuditCommand::Verify {
            data_dir,
            key_file,
            file,
            public_key,
            expect_head,
            allow_gaps,
        } => {
            let code = audit::verify(
                api,
                &audit::Offline { data_dir, key_file },
                audit::VerifyArgs {
                    file,
                    public_key,
                    expect_head,
                    allow_gaps,
                },
                json_out,
            )?;
            std::process::exit(code);
        }
        AuditCommand::SetAside { data_dir } => audit::set_aside(&data_dir, json_out),
    }
}
