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
