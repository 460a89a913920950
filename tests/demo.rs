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
    let admin = vars["VEIL_ADMIN_URL"]
        .trim_start_matches("http://")
        .to_owned();
    let get = |path: &str, token: Option<&str>| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&admin).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    assert!(get("/healthz", None).starts_with("HTTP/1.1 200"));
    assert!(get("/metrics", None).starts_with("HTTP/1.1 401"));
    let m = get("/metrics", Some(&vars["VEIL_ADMIN_TOKEN"]));
    assert!(m.contains("infraveil_connections_total"), "{m}");

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
