//! Real drivers as child processes: finding them, and running the
//! scripts in `tests/clients/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether `program args` succeeds (in `dir`); if not, skip, or fail when
/// `INFRAVEIL_REQUIRE_DRIVERS` is set.
pub async fn have_driver(driver: &str, program: &str, args: &[&str], dir: &Path) -> bool {
    let found = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("INFRAVEIL_REQUIRE_DRIVERS").is_none(),
            "INFRAVEIL_REQUIRE_DRIVERS is set but {driver} is not installed for {program}"
        );
        eprintln!("skipping: {driver} is not installed for {program}; see tests/clients/README.md");
    }
    found
}

pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

pub async fn have_python_module(module: &str) -> bool {
    let import = format!("import {module}");
    have_driver(module, "python3", &["-c", &import], &clients_dir()).await
}

/// A classpath of Debian's jars in `/usr/share/java` (`PGJDBC_JAR`
/// stands in for `postgresql.jar`), if they and a JDK are installed
/// (`java File.java` compiles in memory: a JRE is not enough).
pub async fn java_classpath(jars: &[&str]) -> Option<String> {
    let dir = clients_dir().join("java");
    let mut paths = vec![];
    for jar in jars {
        let path = match std::env::var_os("PGJDBC_JAR") {
            Some(p) if *jar == "postgresql.jar" => PathBuf::from(p),
            _ => Path::new("/usr/share/java").join(jar),
        };
        let path = path.to_string_lossy().into_owned();
        if !have_driver(jar, "test", &["-f", &path], &dir).await {
            return None;
        }
        paths.push(path);
    }
    if !have_driver("a JDK", "javac", &["-version"], &dir).await {
        return None;
    }
    Some(paths.join(":"))
}

/// Run `program args` in `tests/clients/<dir>` with `env`; fails with its
/// output (so far, if it hangs) unless it succeeds; returns its stderr.
///
/// A run that hangs past the limit is run once more, and the hang is
/// reported on stderr either way: asyncpg's 8 MB bytea step hung once in
/// CI (see issue 17's note) and has not been seen since, so a second hang
/// fails the test, but one alone does not sink the build.
pub async fn run_script(program: &str, args: &[&str], dir: &str, env: &[(&str, String)]) -> String {
    let (stdout, stderr) = match run_once(program, args, dir, env).await {
        Ok(out) => out,
        Err((stdout, stderr)) => {
            eprintln!(
                "WARNING: {args:?} did not finish in {LIMIT:?}; running it again\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
            );
            run_once(program, args, dir, env).await.unwrap_or_else(|(again, err)| {
                panic!(
                    "{args:?} did not finish in {LIMIT:?}, twice\n--- stdout\n{again}\n--- stderr\n{err}\n--- the first run's stdout\n{stdout}"
                )
            })
        }
    };
    // Which driver and version passed, in the test's output.
    eprintln!("{stdout}");
    stderr
}

/// How long one run of a driver's script may take.
const LIMIT: Duration = Duration::from_secs(180);

/// One run: its (stdout, stderr), or the same so far if it hung. Panics
/// if it fails.
async fn run_once(
    program: &str,
    args: &[&str],
    dir: &str,
    env: &[(&str, String)],
) -> Result<(String, String), (String, String)> {
    let logs = super::scratch_dir();
    let (out_path, err_path) = (logs.join("stdout"), logs.join("stderr"));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(clients_dir().join(dir))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"));
    let status = tokio::time::timeout(LIMIT, child.wait()).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&logs);
    match status {
        Ok(Ok(s)) if s.success() => Ok((stdout, stderr)),
        Ok(Ok(s)) => panic!("{args:?} failed ({s})\n--- stdout\n{stdout}\n--- stderr\n{stderr}"),
        Ok(Err(e)) => panic!("wait for {program} {args:?}: {e}"),
        Err(_) => Err((stdout, stderr)),
    }
}
