//! A throwaway PostgreSQL cluster on a free loopback port, for `infraveil
//! demo`, the integration tests and the benchmarks.
//!
//! PostgreSQL refuses to run as root, so when we are root the cluster runs as
//! an unprivileged system user (`postgres` if present, else one we create).
//! The server is our direct child with a parent-death signal, so it cannot
//! outlive the process that started it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User};

/// The upstream roles the example policies log in as.
pub const UPSTREAM_ROLES: &[&str] = &["app_owner", "app_write", "app_read", "app_billing"];

const SAMPLE_SCHEMA: &str = include_str!("../testdata/sample_schema.sql");

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found. Install them, e.g. \
         `apt-get install postgresql` on Debian/Ubuntu or `brew install postgresql` on macOS, \
         or set PG_BIN to the directory holding initdb"
    )]
    NotInstalled,
    #[error("{what} failed: {message}")]
    Command { what: String, message: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot prepare an unprivileged user for PostgreSQL: {0}")]
    User(String),
}

/// A running throwaway cluster. Dropping it stops the server and deletes
/// its files.
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    pub socket_dir: PathBuf,
    bin: PathBuf,
    pid: i32,
    run_as: Option<(Uid, Gid)>,
    /// Password of each role in [`UPSTREAM_ROLES`].
    pub passwords: Vec<(String, String)>,
    opts: ClusterOptions,
}

/// Options for [`Cluster::start`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
    /// Turn off fsync: faster, fine for tests, not for data you keep.
    pub unsafe_fast: bool,
    /// Create the upstream roles and the `app` database with sample data.
    pub sample_schema: bool,
    /// Extra `pg_hba.conf` lines placed before the defaults.
    pub hba_prefix: Vec<String>,
    /// Delete the files when this *process* exits even if `Drop` never runs
    /// (test binaries end without running destructors of statics).
    pub reap_on_exit: bool,
}

/// Where the PostgreSQL server binaries are.
pub fn find_bin() -> Result<PathBuf, SandboxError> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        let p = PathBuf::from(dir);
        if p.join("initdb").exists() {
            return Ok(p);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    candidates.sort();
    if let Some((_, p)) = candidates.pop() {
        return Ok(p);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() {
            return Ok(p);
        }
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir);
        if p.join("initdb").exists() && p.join("postgres").exists() {
            return Ok(p);
        }
    }
    Err(SandboxError::NotInstalled)
}

/// A free loopback TCP port (the kernel's choice; released before use).
pub fn free_port() -> Result<u16, SandboxError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The unprivileged user to run PostgreSQL as, when we are root.
fn unprivileged_user() -> Result<Option<(Uid, Gid)>, SandboxError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "infraveil-pg"] {
        if let Ok(Some(u)) = User::from_name(name) {
            return Ok(Some((u.uid, u.gid)));
        }
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "infraveil-pg",
        ])
        .status()
        .map_err(|e| SandboxError::User(format!("useradd: {e}")))?;
    if !status.success() {
        // Another process may have created it in the meantime.
        if !matches!(User::from_name("infraveil-pg"), Ok(Some(_))) {
            return Err(SandboxError::User(format!("useradd exited with {status}")));
        }
    }
    match User::from_name("infraveil-pg") {
        Ok(Some(u)) => Ok(Some((u.uid, u.gid))),
        _ => Err(SandboxError::User(
            "user infraveil-pg not found after useradd".into(),
        )),
    }
}

fn random_password() -> String {
    hex::encode(rand::random::<[u8; 18]>())
}

impl Cluster {
    /// Create, configure and start a cluster; returns once it accepts
    /// connections.
    pub fn start(opts: &ClusterOptions) -> Result<Cluster, SandboxError> {
        let bin = find_bin()?;
        let run_as = unprivileged_user()?;
        let dir = std::env::temp_dir().join(format!(
            "infraveil-pg-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        ));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let socket_dir = dir.join("sock");
        std::fs::create_dir_all(&socket_dir)?;
        if opts.reap_on_exit {
            spawn_reaper(&dir)?;
        }
        let mut cluster = Cluster {
            dir,
            port: 0,
            socket_dir,
            bin,
            pid: 0,
            run_as,
            passwords: Vec::new(),
            opts: opts.clone(),
        };
        if run_as.is_some() {
            cluster.chown_to_server_user(&cluster.dir)?;
            cluster.chown_to_server_user(&cluster.socket_dir)?;
            // The client side (possibly root) must reach the socket.
            std::fs::set_permissions(&cluster.dir, std::fs::Permissions::from_mode(0o711))?;
            std::fs::set_permissions(&cluster.socket_dir, std::fs::Permissions::from_mode(0o755))?;
        }
        cluster.initdb()?;
        // A port can be taken between our probe and the server's bind; retry.
        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.launch() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        if opts.sample_schema {
            cluster.load_sample_schema()?;
        }
        Ok(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid.as_raw()).gid(gid.as_raw());
        }
        c
    }

    fn initdb(&self) -> Result<(), SandboxError> {
        let out = self
            .command("initdb")
            .args(["-D", "data", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ])
            .output()?;
        check("initdb", &out)?;
        let hba = self.dir.join("data/pg_hba.conf");
        let original = std::fs::read_to_string(&hba)?;
        let mut text = self.opts.hba_prefix.join("\n");
        text.push('\n');
        text.push_str(&original);
        std::fs::write(&hba, text)?;
        Ok(())
    }

    fn launch(&mut self) -> Result<(), SandboxError> {
        let opts = &self.opts;
        let mut cmd = self.command("postgres");
        cmd.args(["-D", "data", "-p", &self.port.to_string()])
            .arg("-k")
            .arg(&self.socket_dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
            ])
            .args([
                "-c",
                "logging_collector=off",
                "-c",
                "log_min_messages=warning",
            ]);
        if opts.unsafe_fast {
            cmd.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        for (k, v) in &opts.settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        let log = std::fs::File::create(self.dir.join("postgres.log"))?;
        self.chown_to_server_user(&self.dir.join("postgres.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SIGINT is PostgreSQL's fast shutdown. It is set after the uid
        // change (which would clear it) and fires if our spawning thread
        // ends, so the server is spawned from a thread that lives exactly as
        // long as the server does.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("postgres-sandbox".into())
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id() as i32));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })?;
        self.pid = rx.recv().map_err(|_| SandboxError::Command {
            what: "postgres".into(),
            message: "spawner thread died".into(),
        })??;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self
                .command("pg_isready")
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-p", &self.port.to_string(), "-U", "postgres", "-q"])
                .status()?;
            if ready.success() {
                return Ok(());
            }
            if kill(Pid::from_raw(self.pid), None).is_err() || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                self.stop();
                return Err(SandboxError::Command {
                    what: "postgres".into(),
                    message: format!("server did not start:\n{log}"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run SQL as the superuser over the Unix socket.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, SandboxError> {
        let mut child = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        check("psql", &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn load_sample_schema(&mut self) -> Result<(), SandboxError> {
        let mut roles = String::new();
        for role in UPSTREAM_ROLES {
            let pw = random_password();
            roles.push_str(&format!("CREATE ROLE {role} LOGIN PASSWORD '{pw}';\n"));
            self.passwords.push((role.to_string(), pw));
        }
        roles.push_str("CREATE DATABASE app OWNER app_owner;\n");
        self.psql("postgres", &roles)?;
        self.psql("app", SAMPLE_SCHEMA)?;
        Ok(())
    }

    pub fn password(&self, role: &str) -> Option<&str> {
        self.passwords
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, p)| p.as_str())
    }

    /// Give a file to the server's user (for files the server must read,
    /// such as a TLS key).
    pub fn chown_to_server_user(&self, path: &Path) -> Result<(), SandboxError> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        Ok(())
    }

    /// Stop the server (fast shutdown) and wait for it to exit.
    pub fn stop(&mut self) {
        if self.pid == 0 {
            return;
        }
        let pid = Pid::from_raw(self.pid);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while kill(pid, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if kill(pid, None).is_ok() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        self.pid = 0;
    }

    /// Restart a stopped server on the same port.
    pub fn restart(&mut self) -> Result<(), SandboxError> {
        self.stop();
        self.launch()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check(what: &str, out: &std::process::Output) -> Result<(), SandboxError> {
    if out.status.success() {
        Ok(())
    } else {
        Err(SandboxError::Command {
            what: what.into(),
            message: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        })
    }
}

/// A detached shell that deletes `dir` once this process has exited.
fn spawn_reaper(dir: &Path) -> Result<(), SandboxError> {
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; sleep 2; rm -rf '{}'",
        std::process::id(),
        dir.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn()?;
    Ok(())
}
