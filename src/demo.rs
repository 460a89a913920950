//! `infraveil demo`: a sandbox on the same code path as `serve`. Starts a
//! throwaway PostgreSQL with the sample schema and the upstream roles the
//! example policies need, writes a config (secrets in 0600 files, a
//! self-signed TLS certificate), runs the firewall in front of it (TLS
//! required) and issues a real grant for the printed `DATABASE_URL`. The
//! printed variables are also written as a shell file to `source` in another
//! terminal, since nobody can `eval` a running process's output there.

use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
    /// Write the variables here too (besides `<data_dir>/env`).
    pub env_file: Option<PathBuf>,
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
    #[error("cannot enroll the demo approver: {0}")]
    Approver(#[from] crate::approvals::approvers::ApproverError),
    #[error("the demo runs without approvals")]
    NoApprovals,
    #[error("cannot write {path}: {source}")]
    EnvFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing to overwrite {0}: it was not written by infraveil demo (pick another --env-file)"
    )]
    EnvFileTaken(PathBuf),
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
    /// The shell files written with [`Demo::env_vars`]; removed on stop.
    env_files: Vec<PathBuf>,
}

/// A throwaway table, so a reader of the quickstart can approve a `DROP` and
/// still have `orders` to try Deny on. Created as the owner of the sample
/// schema, like the rest of it.
const DEMO_EXTRAS: &str = "SET ROLE app_owner;
CREATE TABLE public.old_exports (
    id          bigserial PRIMARY KEY,
    exported_at timestamptz NOT NULL DEFAULT now(),
    file        text NOT NULL
);
INSERT INTO public.old_exports (file)
SELECT 'export-' || g || '.csv' FROM generate_series(1, 12) g;
RESET ROLE;
ANALYZE public.old_exports;
";

/// First line of every env file the demo writes: the mark that lets a
/// later demo overwrite it, and keeps it from overwriting anything else.
const ENV_FILE_MARK: &str = "# written by infraveil demo";

/// `value` as one single-quoted shell word: `'` becomes `'\''`.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// The text of an env file: the mark, then `export NAME='value'` lines.
fn env_file_text(vars: &[(&'static str, String)]) -> String {
    let mut text = format!(
        "{ENV_FILE_MARK} (pid {}); it is deleted when the demo stops\n",
        std::process::id()
    );
    for (name, value) in vars {
        text.push_str(&format!("export {name}={}\n", shell_quote(value)));
    }
    text
}

/// Write `text` to `path` with mode 0600 (it holds the admin token and
/// grant secrets), unless `path` holds something the demo did not write.
fn write_env_file(path: &Path, text: &str) -> Result<(), DemoError> {
    use std::io::Write;
    let io = |source| DemoError::EnvFile {
        path: path.to_owned(),
        source,
    };
    if let Ok(old) = std::fs::File::open(path) {
        use std::io::Read;
        let mut head = Vec::new();
        let _ = old.take(ENV_FILE_MARK.len() as u64).read_to_end(&mut head);
        if head != ENV_FILE_MARK.as_bytes() {
            return Err(DemoError::EnvFileTaken(path.to_owned()));
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    // `mode` applies only to a file created now; an old one keeps its own.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

fn write_secret(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn secret() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

/// Write the demo's data directory (policies, secrets, a self-signed
/// certificate, a README with the config) and return the config the
/// firewall runs with, and the admin token.
fn write_setup(opts: &DemoOptions, cluster: &Cluster) -> Result<(Config, String), DemoError> {
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

    let (cert, key) = crate::net::tls::self_signed(&["localhost", "127.0.0.1"])
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
        state: Default::default(),
        grants: GrantsConfig {
            // Port 0 becomes the port actually bound.
            database_url: Some(client_url(opts.port, "app", &tls.join("cert.pem"))),
        },
        dev_credentials: Vec::new(),
    };
    // Keep a copy of the config for people who want to run `serve` on it.
    std::fs::write(data_dir.join("README"), demo_readme(&config))?;
    Ok((config, admin_token))
}

/// Start PostgreSQL and the firewall.
pub async fn start(opts: &DemoOptions) -> Result<Demo, DemoError> {
    let cluster = tokio::task::block_in_place(|| {
        Cluster::start(&ClusterOptions {
            sample_schema: true,
            ..Default::default()
        })
    })?;
    tokio::task::block_in_place(|| cluster.psql("app", DEMO_EXTRAS))?;

    let (config, admin_token) = write_setup(opts, &cluster)?;
    let data_dir = config.data_dir.clone();
    let running = daemon::start_with(
        &config,
        Arc::new(PolicyInspector::empty()),
        daemon::Extras {
            approval_sink: opts.approval_sink.clone(),
            ..Default::default()
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
    // The approver signs in on approval pages with an approver secret:
    // it reaches no database and outlives any grant.
    let approver = running
        .shared
        .approvals
        .as_ref()
        .ok_or(DemoError::NoApprovals)?
        .approvers
        .enroll(DEMO_APPROVER, "demo", &running.shared.policies())
        .await?;
    let admin_url = format!(
        "http://{}",
        running
            .admin_addr
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], opts.admin_port)))
    );
    let mut demo = Demo {
        approver_secret: approver.secret,
        database_url,
        admin_url,
        admin_token,
        env_files: Vec::new(),
        data_dir,
        running,
        cluster,
    };
    let text = env_file_text(&demo.env_vars());
    for path in std::iter::once(demo.data_dir.join("env")).chain(opts.env_file.clone()) {
        // On an error `demo` drops, which stops PostgreSQL, and the caller
        // exits, which ends the firewall's tasks; remove what was written.
        if let Err(e) = write_env_file(&path, &text) {
            for written in &demo.env_files {
                let _ = std::fs::remove_file(written);
            }
            let _ = std::fs::remove_dir_all(&demo.data_dir);
            return Err(e);
        }
        demo.env_files.push(path);
    }
    Ok(demo)
}

/// The URL the demo prints (before the grant's credentials go in), for a
/// firewall on `127.0.0.1:port` with the certificate `cert`: TLS verified
/// against that certificate. `tests/clients/` connects real drivers with it. Drivers disagree on what
/// `sslmode=require` means (node-postgres verifies the certificate, so a
/// self-signed one fails there) but all read `verify-full` with
/// `sslrootcert` alike. The host is `127.0.0.1`, which the certificate
/// names (an IP address entry), not `localhost`, which may resolve to `::1`
/// first, where nothing listens.
pub fn client_url(port: u16, database: &str, cert: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    format!(
        "postgres://127.0.0.1:{port}/{}?sslmode=verify-full&sslrootcert={}",
        url_encode(database.as_bytes(), false),
        url_encode(cert.as_os_str().as_bytes(), true)
    )
}

/// `value` percent-encoded for a URL, keeping the unreserved characters
/// (and `/`, in a query value) as they are. `+` and spaces are encoded:
/// libpq reads a `+` as itself, other drivers as a space.
fn url_encode(value: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn demo_readme(config: &Config) -> String {
    format!(
        "Infraveil demo data directory.\n\
         upstream PostgreSQL: 127.0.0.1:{} (superuser via Unix socket only)\n\
         firewall: {}\n\
         TLS certificate: tls/cert.pem (self-signed, for 127.0.0.1 and localhost; DATABASE_URL verifies it with sslmode=verify-full)\n\
         policies: policies/\n\
         Everything here is deleted when the demo stops.\n",
        config.upstream.port, config.listen
    )
}

impl Demo {
    /// What the demo tells its user, in order: `DATABASE_URL`,
    /// `VEIL_ADMIN_URL`, `VEIL_ADMIN_TOKEN`, `VEIL_DATA_DIR` and
    /// `VEIL_APPROVER_SECRET` (oncall's own grant, for approval pages).
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("VEIL_ADMIN_URL", self.admin_url.clone()),
            ("VEIL_ADMIN_TOKEN", self.admin_token.clone()),
            ("VEIL_DATA_DIR", self.data_dir.display().to_string()),
            ("VEIL_APPROVER_SECRET", self.approver_secret.clone()),
        ]
    }

    /// The shell files holding [`Demo::env_vars`]: `<data_dir>/env`, then
    /// the `--env-file`, if one was given.
    pub fn env_files(&self) -> &[PathBuf] {
        &self.env_files
    }

    /// Run until SIGINT/SIGTERM, then clean up.
    pub async fn run_until_signal(self) -> std::io::Result<()> {
        let Demo {
            running,
            cluster,
            data_dir,
            env_files,
            ..
        } = self;
        let result = running.until_signal().await;
        tokio::task::block_in_place(|| drop(cluster));
        // Their secrets die with the demo; a stale file would only mislead.
        for f in &env_files {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(&data_dir);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_verifies_the_demo_certificate() {
        let url = client_url(6432, "app", Path::new("/tmp/my demo+1/tls/cert.pem"));
        assert_eq!(
            url,
            "postgres://127.0.0.1:6432/app?sslmode=verify-full&sslrootcert=/tmp/my%20demo%2B1/tls/cert.pem"
        );
        // What the grants code does with it: credentials in, the rest kept.
        let mut parsed = url::Url::parse(&url).unwrap();
        parsed.set_username("alice").unwrap();
        assert!(
            parsed
                .as_str()
                .ends_with("sslrootcert=/tmp/my%20demo%2B1/tls/cert.pem")
        );
        let cert = parsed
            .query_pairs()
            .find(|(k, _)| k == "sslrootcert")
            .unwrap()
            .1;
        assert_eq!(cert, "/tmp/my demo+1/tls/cert.pem");
    }

    #[test]
    fn env_file_lines_are_single_shell_words() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("it's $HOME `x`"), r"'it'\''s $HOME `x`'");
        let text = env_file_text(&[("A", "x y".into()), ("B", "'".into())]);
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with(ENV_FILE_MARK));
        assert_eq!(lines.next(), Some("export A='x y'"));
        assert_eq!(lines.next(), Some(r"export B=''\'''"));
    }

    #[test]
    fn env_file_never_overwrites_a_file_it_did_not_write() {
        let dir = std::env::temp_dir().join(format!("veil-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let theirs = dir.join("bashrc");
        std::fs::write(&theirs, "alias ll='ls -l'\n").unwrap();
        let e = write_env_file(&theirs, "x").unwrap_err();
        assert!(matches!(e, DemoError::EnvFileTaken(_)), "{e}");
        assert_eq!(
            std::fs::read_to_string(&theirs).unwrap(),
            "alias ll='ls -l'\n"
        );
        // Its own, from an earlier run, is rewritten (and made 0600).
        let ours = dir.join("env");
        std::fs::write(&ours, format!("{ENV_FILE_MARK} (pid 1)\n")).unwrap();
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = env_file_text(&[("A", "1".into())]);
        write_env_file(&ours, &text).unwrap();
        assert_eq!(std::fs::read_to_string(&ours).unwrap(), text);
        let mode = std::fs::metadata(&ours).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
