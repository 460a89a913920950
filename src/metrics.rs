//! Counters for `/metrics` (Prometheus text format). Plain atomics: the hot
//! path only increments.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub auth_failures_total: AtomicU64,
    pub statements_allowed: AtomicU64,
    pub statements_denied: AtomicU64,
    pub statements_held: AtomicU64,
    pub protocol_errors_total: AtomicU64,
    pub upstream_errors_total: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
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
        put(
            "infraveil_statements_total",
            "counter",
            "Statements inspected, by decision.",
            &[
                ("{decision=\"allow\"}", g(&self.statements_allowed)),
                ("{decision=\"deny\"}", g(&self.statements_denied)),
                ("{decision=\"hold\"}", g(&self.statements_held)),
            ],
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
