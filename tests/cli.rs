//! What a person sees from the binaries when something is wrong: one
//! `error:` line (and its causes), never a backtrace, whatever
//! `RUST_BACKTRACE` says; log lines without colour codes when stderr is not
//! a terminal; `veilctl check` outside the repository saying where it
//! looked. No PostgreSQL needed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn no_backtrace(err: &str) {
    assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    assert!(!err.contains("std::rt::lang_start"), "{err}");
}

#[test]
fn user_errors_are_one_line_with_rust_backtrace_set() {
    let out = Command::new(env!("CARGO_BIN_EXE_infraveil"))
        .args(["serve", "--config", "/nonexistent/infraveil.toml"])
        .env("RUST_BACKTRACE", "full")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert_eq!(
        err.trim_end(),
        "error: cannot read /nonexistent/infraveil.toml: No such file or directory (os error 2)"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_veilctl"))
        .args(["audit", "checkpoint"])
        .env_remove("VEIL_ADMIN_URL")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    no_backtrace(&err);
    assert!(err.starts_with("error: no admin API address"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn check_outside_the_repository_says_where_it_looked() {
    let dir = common::scratch_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_veilctl"))
        .args(["check", "DROP TABLE orders", "--identity", "alice"])
        .current_dir(&dir)
        .env_remove("VEIL_POLICIES")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    no_backtrace(&err);
    assert!(
        err.contains("looked for policies/ in the current directory"),
        "{err}"
    );
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("--policies DIR"), "{err}");
    // Pointed at the repository's, it works from anywhere.
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let out = Command::new(env!("CARGO_BIN_EXE_veilctl"))
        .args([
            "check",
            "SELECT 1",
            "--identity",
            "alice",
            "--policies",
            policies,
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let _ = std::fs::remove_dir_all(dir);
}

/// A daemon whose stderr is a pipe logs without ANSI escapes, and
/// `infraveil healthcheck` (the container HEALTHCHECK) passes on its admin
/// API and fails once it is gone; a daemon that cannot start says why in
/// `error:` and `caused by:` lines.
#[test]
fn daemon_logs_to_a_pipe_without_colours_and_fails_in_plain_words() {
    let dir = common::scratch_dir();
    let config = |policies: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\n\
             data_dir = \"data\"\n\
             policies_dir = \"{policies}\"\n\
             [upstream]\n\
             host = \"127.0.0.1\"\n\
             port = 1\n\
             [admin]\n\
             listen = \"127.0.0.1:0\"\n\
             token = {{ file = \"admin-token\" }}\n"
        )
    };
    std::fs::write(dir.join("admin-token"), "t0ken").unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        config(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_infraveil"))
        .args(["serve", "--config"])
        .arg(&good)
        .env_remove("NO_COLOR")
        .env_remove("INFRAVEIL_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(seen.contains("listening for PostgreSQL clients")
        && seen.contains("admin API listening"))
    {
        assert!(Instant::now() < deadline, "no listening line: {seen}");
        let line = lines.next().expect("the daemon logs").unwrap();
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(!seen.contains('\x1b'), "colour codes in a pipe: {seen:?}");
    let admin = seen
        .split("admin API listening addr=Some(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("admin address in {seen}"))
        .to_owned();
    let healthcheck = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_infraveil"))
            .args(["healthcheck", "--url", url])
            .output()
            .unwrap()
    };
    let healthz = format!("http://{admin}/healthz");
    let ok = healthcheck(&healthz);
    assert!(ok.status.success(), "{}", stderr_of(&ok));
    let missing = healthcheck(&format!("http://{admin}/nope"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr_of(&missing).contains("answered 404"),
        "{}",
        stderr_of(&missing)
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let down = healthcheck(&healthz);
    assert_eq!(down.status.code(), Some(1));
    assert!(
        stderr_of(&down).starts_with(&format!("error: {healthz} did not answer")),
        "{}",
        stderr_of(&down)
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, config("no-such-policies")).unwrap();
    std::fs::remove_dir_all(dir.join("data")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_infraveil"))
        .args(["serve", "--config"])
        .arg(&bad)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    no_backtrace(&err);
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(
        err.lines().any(|l| l == "error: cannot start infraveil"),
        "{err}"
    );
    assert!(err.contains("\ncaused by: "), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `--version` names the commit; the completion scripts cover veilctl's
/// commands for each shell.
#[test]
fn versions_name_the_build_and_completions_cover_the_commands() {
    for bin in [
        env!("CARGO_BIN_EXE_infraveil"),
        env!("CARGO_BIN_EXE_veilctl"),
    ] {
        let out = Command::new(bin).arg("--version").output().unwrap();
        assert!(out.status.success());
        let version = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
        // `git` is there in a checkout; the build then knows its commit.
        if let Ok(git) = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            && git.status.success()
        {
            let head = String::from_utf8_lossy(&git.stdout).trim().to_owned();
            assert!(
                version.contains(&format!("({head}")),
                "{version} is not {head}"
            );
        }
    }
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef veilctl"),
        ("fish", "complete -c veilctl"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_veilctl"))
            .args(["completions", shell])
            .env_remove("VEIL_ADMIN_URL")
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr_of(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for command in ["grants", "approvals", "audit", "blast-radius", "check"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_veilctl"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `--log-format json`: every line one object with time and level, and a
/// session's lines carry its span (session id, identity).
#[tokio::test]
async fn json_logs_carry_the_session_span() {
    let fw = common::child::Firewall::start("100ms").await;
    let c = fw.connect("app").await;
    c.batch_execute("SELECT 1").await.unwrap();
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = fw.log();
        assert!(!lines.is_empty());
        for l in &lines {
            assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
        }
        let started = lines.iter().find(|l| l["message"] == "session started");
        if let Some(l) = started {
            let span = &l["spans"][0];
            assert_eq!(span["name"], "session", "{l}");
            assert_eq!(span["identity"], "alice", "{l}");
            assert!(span["id"].as_u64().is_some(), "{l}");
            assert_eq!(l["role"], "deployer", "{l}");
            break;
        }
        assert!(Instant::now() < deadline, "no session line in {lines:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
