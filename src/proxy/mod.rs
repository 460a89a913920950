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
pub mod stream;
pub mod tls;
pub mod trail;
pub mod upstream;

use std::sync::{Arc, RwLock};

use crate::config::Limits;
use crate::inspect::Inspector;
use crate::policy::PolicySet;

pub use server::Server;

/// Everything sessions share, built once at start-up.
pub struct Shared {
    pub limits: Limits,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
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
}

impl Shared {
    /// A frame reader over a client stream, with the configured size limit.
    pub fn client_reader(
        &self,
        stream: stream::Stream,
    ) -> crate::protocol::FrameReader<stream::Stream> {
        crate::protocol::FrameReader::new(stream, self.limits.max_message_bytes)
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
