//! `infraveil demo` as a user runs it: the four lines, a working
//! `psql "$DATABASE_URL"` over TLS, the admin API, clean-up on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn demo_prints_urls_serves_psql_and_cleans_up() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_infraveil"))
        .args(["demo", "--port", "0", "--admin-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut vars = std::collections::HashMap::new();
    for _ in 0..4 {
        let line = lines.next().expect("demo printed a line").unwrap();
        let (k, v) = line.split_once('=').expect("NAME=value");
        vars.insert(k.to_owned(), v.to_owned());
    }
    let url = &vars["DATABASE_URL"];
    assert!(
        url.starts_with("postgres://alice:") && url.contains("sslmode=require"),
        "{url}"
    );
    assert_eq!(vars["VEIL_ADMIN_TOKEN"].len(), 48);
    let data_dir = std::path::PathBuf::from(&vars["VEIL_DATA_DIR"]);
    assert!(data_dir.exists());

    let out = Command::new("psql")
        .arg(url)
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT count(*) FROM orders",
            "-c",
            "SHOW ssl",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("200\n"), "{text}");

    // /healthz is open; /metrics needs the token.
    let admin = &vars["VEIL_ADMIN_URL"];
    let token = &vars["VEIL_ADMIN_TOKEN"];
    infraveil::proxy::tls::install_default_provider();
    let http = reqwest::blocking::Client::new();
    let get = |path: &str| http.get(format!("{admin}{path}"));
    assert_eq!(get("/healthz").send().unwrap().status(), 200);
    assert_eq!(get("/metrics").send().unwrap().status(), 401);
    let m = get("/metrics")
        .bearer_auth(token)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(m.contains("infraveil_connections_total"), "{m}");
    // veilctl finds the daemon and checks the token from the environment.
    let veilctl = |token: &str| {
        Command::new(env!("CARGO_BIN_EXE_veilctl"))
            .arg("health")
            .env("VEIL_ADMIN_URL", admin)
            .env("VEIL_ADMIN_TOKEN", token)
            .output()
            .unwrap()
    };
    let ok = veilctl(token);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "ok (token accepted)"
    );
    let bad = veilctl("wrong-token");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("token was rejected"));

    // The printed URL is a real grant, and `veilctl grants issue` works
    // against the demo with the printed variables.
    let veilctl_json = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_veilctl"))
            .args(["--output", "json"])
            .args(args)
            .env("VEIL_ADMIN_URL", admin)
            .env("VEIL_ADMIN_TOKEN", token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let list = veilctl_json(&["grants", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["identity"], "alice");
    assert_eq!(list[0]["role"], "deployer");
    let issued = veilctl_json(&[
        "grants",
        "issue",
        "--identity",
        "oncall",
        "--role",
        "readonly",
        "--ttl",
        "15m",
    ]);
    let oncall_url = issued["database_url"].as_str().unwrap();
    assert!(oncall_url.contains("/app?sslmode=require"), "{oncall_url}");
    let out = Command::new("psql")
        .arg(oncall_url)
        .args(["-X", "-A", "-t", "-c", "SELECT current_user"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app_read");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!data_dir.exists(), "demo data dir removed");
}
