//! The PostgreSQL-facing side of the firewall: the listener
//! ([`server`]), one session state machine per client ([`session`]), the
//! message relay between client and PostgreSQL ([`relay`]), authentication
//! ([`auth`]), the upstream login ([`upstream`]), TLS ([`tls`]), held
//! statements waiting for approval ([`hold`]), the upstream databases'
//! user-defined objects ([`catalog`]) and the registry that maps cancel keys
//! and lets grants end live sessions ([`registry`]).

pub mod auth;
pub mod catalog;
pub mod hold;
pub mod registry;
pub mod relay;
pub mod server;
pub mod session;
pub mod state;
pub mod stream;
pub mod tls;
pub mod trail;
pub mod upstream;

use std::sync::{Arc, RwLock};

use crate::config::Limits;
use crate::inspect::Inspector;
use crate::policy::PolicySet;

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
    pub credentials: Arc<dyn auth::CredentialSource>,
    pub policies: RwLock<Arc<PolicySet>>,
    pub inspector: Arc<dyn Inspector>,
    pub upstream: upstream::UpstreamConnector,
    pub registry: registry::Registry,
    pub metrics: crate::metrics::Metrics,
    /// Approval requests; `None` without an admin API, where they would be
    /// decided (held statements are then refused).
    pub approvals: Option<Arc<crate::approvals::Approvals>>,
    pub audit: crate::audit::Audit,
    pub catalogs: catalog::Catalogs,
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
        stream: stream::Stream,
    ) -> crate::protocol::FrameReader<stream::Stream> {
        crate::protocol::FrameReader::new(stream, PRE_AUTH_MAX_MESSAGE)
    }

    pub fn policies(&self) -> Arc<PolicySet> {
        match self.policies.read() {
            Ok(p) => p.clone(),
            // A poisoned lock only means a writer panicked mid-swap of an Arc;
            // the Arc inside is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
