//! Infraveil: a PostgreSQL wire-protocol firewall.
//!
//! Clients point `DATABASE_URL` at Infraveil instead of PostgreSQL. Every
//! statement is inspected before it is forwarded; identities log in with
//! expiring credentials and reach PostgreSQL as a least-privilege upstream user.
//!
//! The map of the crate, in layers from the bottom up (a module uses only
//! modules below it; `tests/layers.rs` checks it):
//! - [`time`], [`config`], [`shutdown`], [`cli`], [`sandbox`] — utilities:
//!   the clock, `infraveil.toml`, the graceful-shutdown signal, what both
//!   binaries share at their edge, a throwaway PostgreSQL cluster.
//! - [`net`] — TCP or TLS streams and the rustls configurations.
//! - [`protocol`] — helpers over pgwire's message codec: frame reading with
//!   limits, startup packets, and the catalogue of client-facing errors.
//! - [`mcp`] — `infraveil mcp`: an MCP server for AI agents that is only a
//!   client of the firewall (its wire protocol and its self-service admin
//!   API, with the agent's own grant); it uses nothing of the firewall's
//!   inside.
//! - [`classify`] — SQL text to statements, each with a class (read, write,
//!   ddl, destructive, privileged, unknown), the tables it touches and why;
//!   no I/O, shared by the proxy and `veilctl check`.
//! - [`metrics`] — counters rendered for Prometheus.
//! - [`policy`] — policy files (roles, identities, kinds, validation), the
//!   decision engine, the inspector seam every `Query` and `Parse`
//!   passes through to get a decision (allow / deny / hold), and the
//!   offline risk checker behind `veilctl check` and the console.
//! - [`auth`] — SCRAM-SHA-256 verifiers and the credential source logins
//!   check against.
//! - [`store`] — the one owner of sled: typed trees under `data_dir` that
//!   each domain opens for itself, and the lock that keeps a second daemon
//!   out.
//! - [`upstream`] — logging in to PostgreSQL as a role's upstream user.
//! - [`audit`] — the signed, hash-chained audit log: events, the chain
//!   format and its verifier (no I/O), the group-commit writer, export.
//! - [`grants`] — just-in-time grants: issue (policy-checked, TTL-capped,
//!   secret shown once), revoke, expiry; the credential source logins use.
//! - [`approvals`] — the human gate: approval requests with a blast-radius
//!   preview, the webhook / terminal notifier, signed single-use links, and
//!   the decisions that let a held statement run once.
//! - [`inventory`] — who *could*: the blast radius of an identity (policy
//!   intersected with PostgreSQL's own privileges), the access review, and
//!   the guard-config generator, and their text for `veilctl` and the
//!   console; reads policy, grants, store and audit.
//! - [`proxy`] — the PostgreSQL listener and per-client session: startup and
//!   TLS, authentication, the message relay, cancel requests, held
//!   statements, the registry of live sessions and the sweeper that ends
//!   those whose grant is no longer valid.
//! - [`admin`] — the admin HTTP API (`/healthz`, `/metrics`, grants, …),
//!   the approval page and the web console under `/console`.
//! - [`daemon`] — wiring it all together for `infraveil serve`.
//! - [`demo`] — `infraveil demo`: the sandbox with the firewall in front.

/// The crate version and the commit it was built from, for `--version`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("INFRAVEIL_GIT_HASH"),
    ")"
);

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod classify;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod grants;
pub mod inventory;
pub mod mcp;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod sandbox;
pub mod shutdown;
pub mod store;
pub mod time;
pub mod upstream;
