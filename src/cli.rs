//! What the two binaries (`infraveil`, `veilctl`) share at their edge with a
//! person: how an error is shown, and whether stderr gets colours.
//!
//! A binary's `main` returning `anyhow::Result` prints the error with
//! `Debug`, which includes the backtrace anyhow captured whenever
//! `RUST_BACKTRACE` is set (common in development shells): forty frames of
//! runtime internals under "the admin token is not set". A user's mistake is
//! not a bug, so the binaries print errors themselves with [`exit`]: one
//! `error:` line and one `caused by:` line per cause, whatever
//! `RUST_BACKTRACE` says. Panics still print theirs.

use std::io::IsTerminal;

/// The exit code of a command that failed because of its input or its
/// environment (as opposed to a check that ran and said no, which the
/// commands report with their own codes).
pub const FAILURE: i32 = 1;

/// `error: …` and a `caused by: …` line per cause. A cause whose text the
/// line before already includes is left out: many errors (thiserror's
/// `"cannot read {path}: {source}"`) show their source themselves.
pub fn render(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("error: {err}");
    let mut shown = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !shown.contains(&text) {
            out.push_str("\ncaused by: ");
            out.push_str(&text);
        }
        shown = text;
        cause = c.source();
    }
    out
}

/// Print `err` as [`render`] does to stderr and end the process with
/// [`FAILURE`].
pub fn exit(err: &(dyn std::error::Error + 'static)) -> ! {
    eprintln!("{}", render(err));
    std::process::exit(FAILURE)
}

/// Whether log lines on stderr may carry ANSI colour codes: only when
/// stderr is a terminal (a file or a pipe would keep the escape bytes) and
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn stderr_colours() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// A plain-text table for terminal output: columns padded to their widest
/// cell, no borders, so `grep` and `awk` still work.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(c);
                } else {
                    let pad = widths[i] - c.chars().count();
                    line.push_str(c);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot start: {0}")]
        Shows(#[source] Inner),
        #[error("cannot start")]
        Hides(#[source] Inner),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("port 6432 is in use")]
    struct Inner;

    #[test]
    fn causes_on_their_own_lines_once() {
        assert_eq!(render(&Inner), "error: port 6432 is in use");
        assert_eq!(
            render(&Outer::Hides(Inner)),
            "error: cannot start\ncaused by: port 6432 is in use"
        );
        // Already in the message: not repeated.
        assert_eq!(
            render(&Outer::Shows(Inner)),
            "error: cannot start: port 6432 is in use"
        );
    }

    #[test]
    fn anyhow_context_is_a_cause() {
        let e = anyhow::Error::new(Inner).context("cannot start the demo");
        assert_eq!(
            render(e.as_ref()),
            "error: cannot start the demo\ncaused by: port 6432 is in use"
        );
    }
}
