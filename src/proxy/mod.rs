//! The PostgreSQL-facing side of the firewall: the listener
//! ([`server`]), one session state machine per client ([`session`]), the
//! message relay between client and PostgreSQL ([`relay`]), held statements
//! waiting for approval ([`hold`]), the upstream databases' user-defined
//! objects ([`catalog`]), row estimates for roles with row limits
//! ([`estimate`]), the registry that maps cancel keys and lets
//! grants end live sessions ([`registry`]) and the [`sweeper`] that does.
//! Authentication is [`crate::auth`]'s, the upstream login
//! [`crate::upstream`]'s and TLS [`crate::net`]'s.

pub mod catalog;
pub mod estimate;
pub mod hold;
pub mod registry;
pub mod relay;
pub mod server;
pub mod session;
pub mod state;
pub mod sweeper;
pub mod trail;

use std::sync::{Arc, RwLock};

use crate::config::Limits;
use crate::policy::PolicySet;
use crate::policy::inspect::Inspector;

pub use server::Server;

/// The largest message a client may send before it is authenticated.
pub const PRE_AUTH_MAX_MESSAGE: usize = 16 * 1024;

/// Everything sessions share, built once at start-up.
pub struct Shared {
    pub limits: Limits,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// `[tls] require`: a startup packet over plain TCP is refused. Cancel
    /// requests are not: libpq before PostgreSQL 17 sends them unencrypted
    /// even for TLS sessions, and PostgreSQL itself serves them before any
    /// `hostssl` rule applies.
    pub tls_required: bool,
    pub credentials: Arc<dyn crate::auth::CredentialSource>,
    /// The policies, for an inspector that does not hold them itself
    /// (see [`Shared::policies`]).
    pub policies: RwLock<Arc<PolicySet>>,
    pub inspector: Arc<dyn Inspector>,
    pub upstream: crate::upstream::UpstreamConnector,
    pub registry: registry::Registry,
    pub metrics: crate::metrics::Metrics,
    /// Approval requests; `None` without an admin API, where they would be
    /// decided (held statements are then refused).
    pub approvals: Option<Arc<crate::approvals::Approvals>>,
    pub audit: crate::audit::Audit,
    pub catalogs: catalog::Catalogs,
    /// Side connections that size the writes of roles with row limits.
    pub planner: estimate::Planner,
    /// Counts policy reloads: a statement prepared under an older count is
    /// judged again when it is bound.
    pub policy_generation: std::sync::atomic::AtomicU64,
    /// Clients between connecting and being logged in (`limits.max_authenticating`).
    pub authenticating: tokio::sync::Semaphore,
}

impl Shared {
    /// A frame reader over a client stream that has not logged in yet: no
    /// message before authentication needs more than a few hundred bytes
    /// (SCRAM's are the largest), so an unauthenticated client cannot make
    /// the firewall buffer more than [`PRE_AUTH_MAX_MESSAGE`]. The relay
    /// reads with the configured limit once the session is logged in.
    pub fn pre_auth_reader(
        &self,
        stream: crate::net::stream::Stream,
    ) -> crate::protocol::FrameReader<crate::net::stream::Stream> {
        crate::protocol::FrameReader::new(stream, PRE_AUTH_MAX_MESSAGE)
    }

    /// The policies in force: the inspector's own when it holds them (one
    /// copy, swapped once on reload), else the ones loaded at start.
    pub fn policies(&self) -> Arc<PolicySet> {
        if let Some(p) = self.inspector.policies() {
            return p;
        }
        match self.policies.read() {
            Ok(p) => p.clone(),
            // A poisoned lock only means a writer panicked mid-swap of an Arc;
            // the Arc inside is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
