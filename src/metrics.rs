//! Counters for `/metrics` (Prometheus text format). Plain atomics: the hot
//! path only increments.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::classify::Class;

const CLASSES: [Class; 6] = [
    Class::Read,
    Class::Write,
    Class::Ddl,
    Class::Destructive,
    Class::Privileged,
    Class::Unknown,
];
const DECISIONS: [&str; 3] = ["allow", "deny", "hold"];

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub auth_failures_total: AtomicU64,
    /// By class (the last row: refused before classification) and decision.
    statements: [[AtomicU64; 3]; 7],
    pub protocol_errors_total: AtomicU64,
    pub upstream_errors_total: AtomicU64,
}

impl Metrics {
    pub const ALLOW: usize = 0;
    pub const DENY: usize = 1;
    pub const HOLD: usize = 2;

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Count one statement decision ([`Metrics::ALLOW`], `DENY`, `HOLD`).
    pub fn statement(&self, class: Option<Class>, decision: usize) {
        let row = class.map_or(CLASSES.len(), |c| c as usize);
        Self::inc(&self.statements[row][decision.min(2)]);
    }

    /// Statements with this decision, over all classes.
    pub fn statements_with(&self, decision: usize) -> u64 {
        self.statements
            .iter()
            .map(|row| row[decision.min(2)].load(Ordering::Relaxed))
            .sum()
    }

    /// Render in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, series: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in series {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        put(
            "infraveil_connections_total",
            "counter",
            "Client connections accepted.",
            &[("", g(&self.connections_total))],
        );
        put(
            "infraveil_connections_active",
            "gauge",
            "Client connections open now.",
            &[("", g(&self.connections_active))],
        );
        put(
            "infraveil_auth_failures_total",
            "counter",
            "Failed client authentications.",
            &[("", g(&self.auth_failures_total))],
        );
        let labels: Vec<(String, u64)> = CLASSES
            .iter()
            .map(|c| c.as_str())
            .chain(["none"])
            .enumerate()
            .flat_map(|(row, class)| {
                DECISIONS.iter().enumerate().map(move |(col, decision)| {
                    (
                        format!("{{class=\"{class}\",decision=\"{decision}\"}}"),
                        row,
                        col,
                    )
                })
            })
            .map(|(l, row, col)| (l, g(&self.statements[row][col])))
            .collect();
        let series: Vec<(&str, u64)> = labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        put(
            "infraveil_statements_total",
            "counter",
            "Statements inspected, by class (none: refused before classification) and decision.",
            &series,
        );
        put(
            "infraveil_protocol_errors_total",
            "counter",
            "Connections ended for invalid protocol input.",
            &[("", g(&self.protocol_errors_total))],
        );
        put(
            "infraveil_upstream_errors_total",
            "counter",
            "Failures to connect or log in to upstream PostgreSQL.",
            &[("", g(&self.upstream_errors_total))],
        );
        out
    }
}

/// Append one gauge in the Prometheus text format (for values kept outside
/// [`Metrics`], such as the number of active grants).
pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}
