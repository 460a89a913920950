//! The PostgreSQL listener: accepts connections, enforces the connection
//! limit, spawns one session task per client, and drains on shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::Shared;
use super::registry::Registry;
use crate::auth::CredentialSource;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::PolicySet;
use crate::policy::inspect::Inspector;
use crate::protocol::PgError;
use crate::shutdown::{Phase, Shutdown};
use crate::upstream::UpstreamConnector;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    AuditKey(#[from] crate::audit::key::KeyError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What sessions use besides config: where credentials, decisions,
/// approvals and the audit log come from.
pub struct Services {
    pub credentials: Arc<dyn CredentialSource>,
    pub inspector: Arc<dyn Inspector>,
    pub approvals: Option<Arc<crate::approvals::Approvals>>,
    pub audit: crate::audit::Audit,
}

/// A bound, ready-to-run firewall listener.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Bind the listener and prepare shared state. Secrets are read here, once.
    pub async fn bind(
        config: &Config,
        policies: Arc<PolicySet>,
        services: Services,
    ) -> Result<Server, ServerError> {
        let tls = match config.tls_files() {
            Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(
                crate::net::tls::server_config(cert, key)?,
            )),
            None => None,
        };
        let mut passwords = std::collections::HashMap::new();
        for (user, source) in &config.upstream.passwords {
            passwords.insert(
                user.clone(),
                source.read(&format!("upstream password for {user}"))?,
            );
        }
        let upstream = UpstreamConnector {
            tls: crate::net::tls::upstream_config(&config.upstream)?,
            config: config.upstream.clone(),
            passwords,
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let shared = Arc::new(Shared {
            catalogs: Default::default(),
            planner: Default::default(),
            policy_generation: Default::default(),
            authenticating: tokio::sync::Semaphore::new(config.limits.max_authenticating),
            limits: config.limits.clone(),
            tls,
            tls_required: config.tls_required(),
            credentials: services.credentials,
            policies: RwLock::new(policies),
            inspector: services.inspector,
            upstream,
            registry: Registry::default(),
            metrics: Metrics::default(),
            approvals: services.approvals,
            audit: services.audit,
        });
        Ok(Server { listener, shared })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Accept clients until shutdown reaches `Draining`, then wait for the
    /// sessions up to the grace period and close the rest.
    pub async fn run(
        self,
        mut shutdown: Shutdown,
        controller: Arc<crate::shutdown::ShutdownController>,
    ) {
        let limit = Arc::new(Semaphore::new(self.shared.limits.max_connections));
        let mut sessions = JoinSet::new();
        info!(
            addr = %self.local_addr(),
            tls = self.shared.tls.is_some(),
            tls_required = self.shared.tls_required,
            "listening for PostgreSQL clients"
        );
        loop {
            tokio::select! {
                _ = shutdown.reached(Phase::Draining) => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                accepted = self.listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            error!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        warn!(client = %peer, "connection limit reached");
                        sessions.spawn(refuse(tcp, PgError::too_many_clients()));
                        continue;
                    };
                    let shared = self.shared.clone();
                    let sd = controller.subscribe();
                    sessions.spawn(async move {
                        super::session::run(tcp, peer, shared, sd).await;
                        drop(permit);
                    });
                }
            }
        }
        drop(self.listener);
        let grace = self.shared.limits.shutdown_grace;
        info!(sessions = sessions.len(), ?grace, "draining sessions");
        let drained = tokio::time::timeout(grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            info!(
                sessions = sessions.len(),
                "grace period over; closing sessions"
            );
            controller.set(Phase::Closing);
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while sessions.join_next().await.is_some() {}
            })
            .await;
        }
        info!("listener stopped");
    }
}

async fn refuse(mut tcp: tokio::net::TcpStream, err: PgError) {
    use tokio::io::AsyncWriteExt;
    let _ = tcp.write_all(&err.to_bytes()).await;
    let _ = tcp.shutdown().await;
}
