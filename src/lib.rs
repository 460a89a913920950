//! Infraveil: a PostgreSQL wire-protocol firewall.
//!
//! Clients point `DATABASE_URL` at Infraveil instead of PostgreSQL. Every
//! statement is inspected before it is forwarded; identities log in with
//! expiring credentials and reach PostgreSQL as a least-privilege upstream user.
//!
//! The map of the crate:
//! - [`proxy`] — the PostgreSQL listener and per-client session: startup and
//!   TLS, SCRAM authentication, the upstream login, the message relay, cancel
//!   requests and the registry of live sessions.
//! - [`protocol`] — helpers over pgwire's message codec: frame reading with
//!   limits, startup packets, and the one place client-facing errors are built.
//! - [`inspect`] — the seam every `Query` and `Parse` passes through to get a
//!   decision (allow / deny / hold) before anything reaches PostgreSQL.
//! - [`classify`] — SQL text to statements, each with a class (read, write,
//!   ddl, destructive, privileged, unknown), the tables it touches and why;
//!   no I/O, shared by the proxy and `veilctl check`.
//! - [`policy`] — policy files (roles, identities, kinds, validation), the
//!   decision engine, and the inspector that enforces it in the proxy.
//! - [`grants`] — just-in-time grants: issue (policy-checked, TTL-capped,
//!   secret shown once), revoke, expiry; the credential source logins use,
//!   and the sweeper that ends sessions whose grant is no longer valid.
//! - [`approvals`] — the human gate: approval requests with a blast-radius
//!   preview, the webhook / terminal notifier, signed single-use links, and
//!   the decisions that let a held statement run once.
//! - [`audit`] — the signed, hash-chained audit log: events, the chain
//!   format and its verifier (no I/O), the group-commit writer, export.
//! - [`inventory`] — who *could*: blast radius of an identity (policy
//!   intersected with PostgreSQL's own privileges), the access review, and
//!   the guard-config generator; reads policy, grants, store and audit.
//! - [`store`] — the one owner of sled: typed reads and writes of state under
//!   `data_dir`, and the lock that keeps a second daemon out.
//! - [`config`] — `infraveil.toml` and where secrets come from.
//! - [`admin`] — the admin HTTP API (`/healthz`, `/metrics`, grants, …).
//! - [`sandbox`] — a throwaway PostgreSQL cluster, for the demo and tests.
//! - [`demo`] — `infraveil demo`: the sandbox with the firewall in front.
//! - [`shutdown`] — the graceful-shutdown signal passed to every task.
//! - [`metrics`] — counters rendered for Prometheus.
//! - [`cli`] — what both binaries share with a person at their edge: one
//!   `error:` line (never a backtrace) and colours only on a terminal.

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod classify;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod grants;
pub mod inspect;
pub mod inventory;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod sandbox;
pub mod shutdown;
pub mod store;
