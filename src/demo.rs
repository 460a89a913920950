//! `infraveil demo`: a sandbox on the same code path as `serve`. Starts a
//! throwaway PostgreSQL with the sample schema and the upstream roles the
//! example policies need, writes a config (secrets in 0600 files, a
//! self-signed TLS certificate), runs the firewall in front of it and issues a
//! real grant for the printed `DATABASE_URL`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{
    AdminConfig, Config, GrantsConfig, Limits, SecretSource, TlsConfig, UpstreamConfig,
};
use crate::daemon::{self, Running};
use crate::grants::{GrantError, IssueRequest};
use crate::policy::PolicyInspector;
use crate::sandbox::{Cluster, ClusterOptions, SandboxError};

/// The example policies, embedded so the demo runs from any directory.
const EXAMPLE_POLICIES: &[(&str, &str)] = &[
    ("roles.toml", include_str!("../policies/roles.toml")),
    (
        "identities.toml",
        include_str!("../policies/identities.toml"),
    ),
];

/// The identity and role of the demo grant.
pub const DEMO_IDENTITY: &str = "alice";
pub const DEMO_ROLE: &str = "deployer";
/// The demo grant's lifetime: the `deployer` role's `max_ttl`.
pub const DEMO_TTL: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

#[derive(Clone)]
pub struct DemoOptions {
    pub port: u16,
    pub admin_port: u16,
    /// Post approval requests here; without it they go to `approval_sink`.
    pub webhook_url: Option<String>,
    pub approval_sink: Option<crate::approvals::notify::Sink>,
}

/// The approver the example policies name for `deployer`.
pub const DEMO_APPROVER: &str = "oncall";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Server(#[from] crate::proxy::server::ServerError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot create TLS certificate: {0}")]
    Cert(String),
    #[error("cannot issue the demo grant: {0}")]
    Grant(#[from] GrantError),
}

/// A running demo; dropping it removes the data directory and stops
/// PostgreSQL.
pub struct Demo {
    pub database_url: String,
    /// `oncall`'s grant secret, to sign in on approval pages.
    pub approver_secret: String,
    pub admin_url: String,
    pub admin_token: String,
    pub data_dir: PathBuf,
    pub running: Running,
    cluster: Cluster,
}

fn write_secret(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn secret() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

/// Start PostgreSQL and the firewall.
pub async fn start(opts: &DemoOptions) -> Result<Demo, DemoError> {
    let cluster = tokio::task::block_in_place(|| {
        Cluster::start(&ClusterOptions {
            sample_schema: true,
            ..Default::default()
        })
    })?;

    let data_dir = std::env::temp_dir().join(format!(
        "infraveil-demo-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 3]>())
    ));
    let secrets = data_dir.join("secrets");
    let policies = data_dir.join("policies");
    let tls = data_dir.join("tls");
    for d in [&data_dir, &secrets, &policies, &tls] {
        std::fs::create_dir_all(d)?;
    }
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))?;
    for (name, text) in EXAMPLE_POLICIES {
        std::fs::write(policies.join(name), text)?;
    }

    let mut passwords = std::collections::BTreeMap::new();
    for (role, pw) in &cluster.passwords {
        let f = secrets.join(format!("upstream-{role}"));
        write_secret(&f, pw)?;
        passwords.insert(role.clone(), SecretSource::file(f));
    }
    let admin_token = secret();
    write_secret(&secrets.join("admin-token"), &admin_token)?;
    let webhook = match &opts.webhook_url {
        Some(url) => {
            write_secret(&secrets.join("webhook-url"), url)?;
            Some(crate::config::WebhookConfig {
                url: SecretSource::file(secrets.join("webhook-url")),
                signing_secret: None,
                timeout: std::time::Duration::from_secs(5),
                retries: 3,
            })
        }
        None => None,
    };

    let (cert, key) = crate::proxy::tls::self_signed(&["localhost", "127.0.0.1"])
        .map_err(|e| DemoError::Cert(e.to_string()))?;
    std::fs::write(tls.join("cert.pem"), cert)?;
    write_secret(&tls.join("key.pem"), &key)?;

    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], opts.port)),
        // Clients must use TLS (the default with a certificate): the demo
        // shows the setup worth copying.
        tls: Some(TlsConfig {
            require: Some(true),
            ..TlsConfig::new(tls.join("cert.pem"), tls.join("key.pem"))
        }),
        upstream: UpstreamConfig {
            host: "127.0.0.1".into(),
            port: cluster.port,
            tls: Default::default(),
            ca_file: None,
            server_name: None,
            connect_timeout: std::time::Duration::from_secs(5),
            passwords,
        },
        admin: AdminConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], opts.admin_port))),
            token: Some(SecretSource::file(secrets.join("admin-token"))),
        },
        policies_dir: policies,
        data_dir: data_dir.clone(),
        limits: Limits::default(),
        approvals: crate::config::ApprovalsConfig {
            webhook,
            ..Default::default()
        },
        audit: Default::default(),
        grants: GrantsConfig {
            // Port 0 becomes the port actually bound.
            database_url: Some(format!(
                "postgres://127.0.0.1:{}/app?sslmode=require",
                opts.port
            )),
        },
        dev_credentials: Vec::new(),
    };
    // Keep a copy of the config for people who want to run `serve` on it.
    std::fs::write(data_dir.join("README"), demo_readme(&config))?;
    let running = daemon::start_with(
        &config,
        Arc::new(PolicyInspector::empty()),
        daemon::Extras {
            approval_sink: opts.approval_sink.clone(),
        },
    )
    .await?;
    // A real grant, the same as `veilctl grants issue` makes.
    let issued = running
        .grants
        .issue(
            &running.shared.policies(),
            IssueRequest {
                identity: DEMO_IDENTITY.into(),
                role: DEMO_ROLE.into(),
                ttl: Some(DEMO_TTL),
                reason: Some("infraveil demo".into()),
                issued_by: Some("demo".into()),
            },
        )
        .await?;
    let database_url = issued.database_url;
    // The approver needs a credential of their own to sign in on the
    // approval page.
    let approver = running
        .grants
        .issue(
            &running.shared.policies(),
            IssueRequest {
                identity: DEMO_APPROVER.into(),
                role: "readonly".into(),
                ttl: Some(DEMO_TTL),
                reason: Some("infraveil demo approver".into()),
                issued_by: Some("demo".into()),
            },
        )
        .await?;
    let admin_url = format!(
        "http://{}",
        running
            .admin_addr
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], opts.admin_port)))
    );
    Ok(Demo {
        approver_secret: approver.password,
        database_url,
        admin_url,
        admin_token,
        data_dir,
        running,
        cluster,
    })
}

fn demo_readme(config: &Config) -> String {
    format!(
        "Infraveil demo data directory.\n\
         upstream PostgreSQL: 127.0.0.1:{} (superuser via Unix socket only)\n\
         firewall: {}\n\
         TLS certificate: tls/cert.pem (self-signed; use sslrootcert=... with sslmode=verify-full)\n\
         policies: policies/\n\
         Everything here is deleted when the demo stops.\n",
        config.upstream.port, config.listen
    )
}

impl Demo {
    /// Run until SIGINT/SIGTERM, then clean up.
    pub async fn run_until_signal(self) -> std::io::Result<()> {
        let Demo {
            running,
            cluster,
            data_dir,
            ..
        } = self;
        let result = running.until_signal().await;
        tokio::task::block_in_place(|| drop(cluster));
        let _ = std::fs::remove_dir_all(&data_dir);
        result
    }
}
