//! `infraveil demo` as a user runs it: the printed lines, the same
//! variables in a file to `source` in another terminal, a working
//! `psql "$DATABASE_URL"` over TLS (and a plaintext client refused), the
//! admin API and `veilctl`, a held `DROP TABLE old_exports` approved from
//! the printed link, a `DROP TABLE orders` denied with `veilctl`, clean-up
//! on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn demo_prints_urls_serves_psql_and_cleans_up() {
    let scratch = std::env::temp_dir().join(format!("infraveil-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let env_file = scratch.join("demo.env");
    let mut child = Command::new(env!("CARGO_BIN_EXE_infraveil"))
        .args(["demo", "--port", "0", "--admin-port", "0", "--env-file"])
        .arg(&env_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log, kept for the checks below; the demo blocks if nobody reads.
    let (logged, log) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if logged.send(line).is_err() {
                break;
            }
        }
    });
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut vars = std::collections::HashMap::new();
    for _ in 0..5 {
        let line = lines.next().expect("demo printed a line").unwrap();
        let (k, v) = line.split_once('=').expect("NAME=value");
        vars.insert(k.to_owned(), v.to_owned());
    }
    // The rest of stdout is approval messages; read them as they come.
    let (printed, messages) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if printed.send(line).is_err() {
                break;
            }
        }
    });
    let url = &vars["DATABASE_URL"];
    assert_eq!(vars["VEIL_ADMIN_TOKEN"].len(), 48);
    let data_dir = std::path::PathBuf::from(&vars["VEIL_DATA_DIR"]);
    assert!(data_dir.exists());
    // TLS verified against the demo's own certificate, which names the
    // host: the form every driver reads alike (node-postgres fails a
    // self-signed certificate under `require`). `psql` below connects with it.
    let verified = format!(
        "/app?sslmode=verify-full&sslrootcert={}",
        data_dir.join("tls/cert.pem").display()
    );
    assert!(
        url.starts_with("postgres://alice:")
            && url.contains("@127.0.0.1:")
            && url.ends_with(&verified),
        "{url}"
    );

    // The same variables as shell exports, in the data directory and in
    // --env-file, readable only by their owner; the log says how to use them.
    let sourced = data_dir.join("env");
    for f in [&sourced, &env_file] {
        let text = std::fs::read_to_string(f).unwrap();
        for name in [
            "DATABASE_URL",
            "VEIL_ADMIN_URL",
            "VEIL_ADMIN_TOKEN",
            "VEIL_DATA_DIR",
            "VEIL_APPROVER_SECRET",
        ] {
            let line = format!("export {name}='{}'", vars[name]);
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let hint = format!("in another terminal: source {}", sourced.display());
    let mut logs = String::new();
    while !logs.contains(&hint) {
        let line = log
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("the log says how to source the file: {logs}"));
        logs.push_str(&line);
        logs.push('\n');
    }
    assert!(!logs.contains('\x1b'), "colour codes in a pipe: {logs:?}");
    // veilctl takes the admin URL and token from the sourced environment.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && exec '{}' health",
            env_file.display(),
            env!("CARGO_BIN_EXE_veilctl")
        ))
        .env_remove("VEIL_ADMIN_URL")
        .env_remove("VEIL_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok (token accepted)"
    );

    // TLS is required: a plaintext client is refused before it logs in.
    let plain = url.replace(&verified, "/app?sslmode=disable");
    let out = Command::new("psql")
        .arg(&plain)
        .args(["-X", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connection requires TLS"), "{err}");

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
    infraveil::net::tls::install_default_provider();
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
    // The demo's own grant: alice as deployer; oncall approves with an
    // approver secret, which is no grant.
    let list = veilctl_json(&["grants", "list"]);
    let mut held: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["identity"].as_str().unwrap().to_owned(),
                g["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    held.sort();
    assert_eq!(held, vec![("alice".to_owned(), "deployer".to_owned())]);
    let approvers = veilctl_json(&["approvers", "list"]);
    assert_eq!(approvers[0]["identity"], "oncall", "{approvers}");
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
    assert!(oncall_url.ends_with(&verified), "{oncall_url}");
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

    // The round trip: a held DROP TABLE waits, the demo prints the request
    // with its link, oncall approves on the page, the DROP runs.
    let run_psql = |sql: &'static str| {
        let url = url.clone();
        std::thread::spawn(move || {
            Command::new("psql")
                .arg(url)
                .args(["-X", "-c", sql])
                .output()
                .unwrap()
        })
    };
    let drop = run_psql("DROP TABLE old_exports");
    let mut message = String::new();
    let link = loop {
        let line = messages
            .recv_timeout(Duration::from_secs(15))
            .expect("the demo prints the approval request");
        message.push_str(&line);
        message.push('\n');
        if let Some(l) = line.split("open ").nth(1) {
            break l.trim().to_owned();
        }
    };
    assert!(message.contains("DROP TABLE old_exports"), "{message}");
    assert!(message.contains("blast radius"), "{message}");
    let page = http.get(&link).send().unwrap();
    assert_eq!(page.status(), 200);
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body = page.text().unwrap();
    let field = |name: &str| {
        let key = format!("name=\"{name}\" value=\"");
        let start = body.find(&key).unwrap() + key.len();
        body[start..].split('"').next().unwrap().to_owned()
    };
    let form = format!(
        "t={}&csrf={}&approver=oncall&secret={}&decision=approve",
        field("t"),
        field("csrf"),
        vars["VEIL_APPROVER_SECRET"]
    );
    let decided = http
        .post(link.split('?').next().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .body(form)
        .send()
        .unwrap();
    assert_eq!(decided.status(), 200, "{}", decided.text().unwrap());
    let out = drop.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "DROP TABLE");

    // The other way: DROP TABLE orders, denied from a terminal.
    let drop = run_psql("DROP TABLE orders");
    let id = {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let pending = veilctl_json(&["approvals", "list"]);
            let found = pending.as_array().unwrap().iter().find_map(|a| {
                (a["statement"] == "DROP TABLE orders")
                    .then(|| a["id"].as_str().unwrap().to_owned())
            });
            if let Some(id) = found {
                break id;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "DROP TABLE orders is not pending: {pending}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let denied = veilctl_json(&["approvals", "deny", &id, "--as", "oncall"]);
    assert_eq!(denied["status"], "denied", "{denied}");
    let out = drop.join().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("denied by oncall"), "{err}");
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "-A", "-t", "-c", "SELECT count(*) FROM orders"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200");

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
    assert!(!env_file.exists(), "the --env-file and its secrets removed");
    let _ = std::fs::remove_dir_all(scratch);
}
