//! `infraveil serve` as a child process of the test, in front of a real
//! PostgreSQL, so it can be killed with SIGKILL and started again on the
//! same data directory (crash tests of the audit log).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::{ADMIN_TOKEN, PASSWORD, cluster, payloads, scratch_dir, veilctl};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `infraveil serve` as a child process, so it can be killed with SIGKILL.
pub struct Firewall {
    child: Option<tokio::process::Child>,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pub pg_port: u16,
    pub admin_url: String,
    /// Extra environment for the daemon.
    env: Vec<(String, String)>,
}

impl Firewall {
    /// A firewall with its own data dir in front of the shared cluster;
    /// records nobody waits for are held for `read_window`.
    pub async fn start(read_window: &str) -> Firewall {
        Self::start_before(cluster().port, read_window).await
    }

    /// The same in front of the PostgreSQL on `upstream` (a private
    /// cluster, which has the shared cluster's role passwords).
    pub async fn start_before(upstream: u16, read_window: &str) -> Firewall {
        Self::start_with(upstream, read_window, "").await
    }

    /// One of several instances on the control database at `state_url`,
    /// named `instance`, in front of the shared cluster.
    pub async fn start_shared(state_url: &str, instance: &str, read_window: &str) -> Firewall {
        Self::try_start_shared(state_url, instance, read_window)
            .await
            .unwrap_or_else(|log| panic!("infraveil serve did not come up: {log}"))
    }

    /// [`Firewall::start_shared`], or the daemon's log if it would not start.
    pub async fn try_start_shared(
        state_url: &str,
        instance: &str,
        read_window: &str,
    ) -> Result<Firewall, String> {
        Self::try_start_shared_with(state_url, instance, read_window, "").await
    }

    /// [`Firewall::try_start_shared`] with more `[state]` settings
    /// (`state_extra`, lines of TOML) and the URL given as is.
    pub async fn try_start_shared_with(
        state_url: &str,
        instance: &str,
        read_window: &str,
        state_extra: &str,
    ) -> Result<Firewall, String> {
        let mut fw = Self::configure_shared(state_url, instance, read_window, state_extra);
        fw.try_spawn().await.map(|()| fw)
    }

    /// [`Firewall::try_start_shared`] signing with `other`'s audit key (a
    /// second daemon standing in for the first).
    #[allow(dead_code)]
    pub async fn try_start_shared_as(
        state_url: &str,
        instance: &str,
        read_window: &str,
        other: &Firewall,
    ) -> Result<Firewall, String> {
        let mut fw = Self::configure_shared(state_url, instance, read_window, "");
        let key = infraveil::daemon::AUDIT_KEY_FILE;
        let data = fw.dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(
            &data,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
        )
        .unwrap();
        std::fs::copy(other.dir.join("data").join(key), data.join(key)).unwrap();
        fw.try_spawn().await.map(|()| fw)
    }

    /// An instance on the control database at `state_url` (given in the
    /// environment, as a secret is), not started yet.
    fn configure_shared(
        state_url: &str,
        instance: &str,
        read_window: &str,
        state_extra: &str,
    ) -> Firewall {
        let extra = format!(
            "[state]\nbackend = \"postgres\"\nurl = {{ env = \"VEIL_STATE_URL\" }}\ninstance = \"{instance}\"\n{state_extra}\n"
        );
        let mut fw = Self::configure(cluster().port, read_window, &extra);
        fw.env.push(("VEIL_STATE_URL".into(), state_url.into()));
        fw
    }

    /// Whether the daemon has exited (and reaped).
    #[allow(dead_code)]
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// The daemon's log file as text.
    #[allow(dead_code)]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A firewall in front of `upstream` with `extra` appended to its
    /// config.
    pub async fn start_with(upstream: u16, read_window: &str, extra: &str) -> Firewall {
        let mut fw = Self::configure(upstream, read_window, extra);
        fw.spawn().await;
        fw
    }

    fn configure(upstream: u16, read_window: &str, extra: &str) -> Firewall {
        let dir = scratch_dir();
        let mut passwords = String::new();
        for (role, pw) in &cluster().passwords {
            let f = dir.join(format!("pw-{role}"));
            std::fs::write(&f, pw).unwrap();
            passwords.push_str(&format!("{role} = {{ file = {:?} }}\n", f));
        }
        std::fs::write(dir.join("token"), ADMIN_TOKEN).unwrap();
        std::fs::write(dir.join("secret"), PASSWORD).unwrap();
        let (pg_port, admin_port) = (free_port(), free_port());
        let config = format!(
            r#"
listen = "127.0.0.1:{pg_port}"
data_dir = {data:?}
policies_dir = {policies:?}

[upstream]
host = "127.0.0.1"
port = {upstream}

[upstream.passwords]
{passwords}
[admin]
listen = "127.0.0.1:{admin_port}"
token = {{ file = {token:?} }}

[audit]
read_window = "{read_window}"

[[dev_credentials]]
identity = "alice"
role = "deployer"
secret = {{ file = {secret:?} }}

{extra}
"#,
            data = dir.join("data"),
            policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            token = dir.join("token"),
            secret = dir.join("secret"),
        );
        let config_path = dir.join("infraveil.toml");
        std::fs::write(&config_path, config).unwrap();
        Firewall {
            child: None,
            log: dir.join("daemon.log"),
            dir,
            config: config_path,
            pg_port,
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            env: Vec::new(),
        }
    }

    async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("infraveil serve did not come up: {log}");
        }
    }

    /// Start the daemon; its log if it exits or does not come up.
    async fn try_spawn(&mut self) -> Result<(), String> {
        infraveil::net::tls::install_default_provider();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_infraveil"))
            // JSON lines, as a log pipeline would take them (see `log`).
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&self.config)
            .env("INFRAVEIL_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn infraveil serve");
        self.child = Some(child);
        let http = reqwest::Client::new();
        // A minute: a loaded CI machine starts a daemon slowly.
        for _ in 0..1200 {
            if let Ok(r) = http.get(format!("{}/healthz", self.admin_url)).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// What the daemon has logged so far, one JSON object a line.
    pub fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect()
    }

    /// A session as alice (deployer), without TLS.
    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        self.connect_as("alice", PASSWORD, db).await.unwrap()
    }

    /// A session as `user` with `password`.
    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let cfg = format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} sslmode=disable connect_timeout=10",
            self.pg_port
        );
        let (client, conn) = tokio_postgres::connect(&cfg, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// [`Firewall::connect_as`], with a receiver of when and how the
    /// connection ended (`SQLSTATE message` of an error the server sent).
    pub async fn connect_watched_as(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> (
        tokio_postgres::Client,
        tokio::sync::oneshot::Receiver<(std::time::Instant, String)>,
    ) {
        super::connect_watched(&format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} sslmode=disable",
            self.pg_port
        ))
        .await
    }

    /// Pull the plug.
    pub async fn kill_9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    /// Start again on the same data dir; the log must verify. Returns every
    /// payload in it.
    pub async fn restart_and_export(&mut self) -> Vec<Value> {
        self.spawn().await;
        let (ok, out, err) = veilctl(
            Some(&self.admin_url),
            &["--output", "json", "audit", "verify"],
        )
        .await;
        assert!(ok, "verify after the crash: {out}{err}");
        let (ok, out, err) = veilctl(Some(&self.admin_url), &["audit", "export"]).await;
        assert!(ok, "export: {err}");
        payloads(&out)
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
