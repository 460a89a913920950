//! Wiring for `infraveil serve` (and the demo, which runs the same path):
//! builds the listener and the admin API from a [`Config`], handles SIGHUP
//! (policy reload) and SIGTERM/SIGINT (graceful shutdown).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::approvals::{Approvals, Notifier};
use crate::audit::{Audit, Event};
use crate::auth::dev_credentials;
use crate::config::Config;
use crate::grants::Grants;
use crate::policy::PolicySet;
use crate::policy::inspect::Inspector;
use crate::proxy::Shared;
use crate::proxy::server::{Server, ServerError, Services};
use crate::shutdown::{Phase, ShutdownController};
use crate::store::Store;

/// A started firewall: addresses and the handle to stop it.
pub struct Running {
    pub pg_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    pub grants: Arc<Grants>,
    controller: Arc<ShutdownController>,
    server: JoinHandle<()>,
    admin: Option<JoinHandle<()>>,
    /// The audit writer, grant sweeper and approval expirer.
    background: Vec<JoinHandle<()>>,
    policies_dir: std::path::PathBuf,
}

/// The audit signing key's file name in `data_dir` (unless configured).
pub const AUDIT_KEY_FILE: &str = "audit-ed25519.key";

/// Post each audit checkpoint to the webhook, so a copy of the chain's head
/// lives outside this machine.
fn checkpoint_poster(
    webhook: Arc<crate::approvals::notify::Webhook>,
) -> crate::audit::CheckpointSink {
    Arc::new(move |c: &crate::audit::Checkpoint| {
        let webhook = webhook.clone();
        let body = serde_json::json!({
            "text": format!(
                "infraveil audit checkpoint: record {} has hash {} (verify with veilctl audit verify --expect-head {}:{})",
                c.head_seq, c.head_hash, c.head_seq, c.head_hash
            ),
        });
        tokio::spawn(async move {
            if let Err(e) = webhook.post(&body).await {
                tracing::warn!(error = %e, "audit checkpoint could not be posted");
            }
        });
    })
}

/// Optional wiring beyond the config file.
#[derive(Default, Clone)]
pub struct Extras {
    /// Without a webhook, hand approval messages to this (the demo prints
    /// them); otherwise they are logged.
    pub approval_sink: Option<crate::approvals::notify::Sink>,
    /// The state store's fault switch (tests turn it on to prove the
    /// firewall fails closed when its disk does).
    pub store_faults: crate::store::Faults,
}

/// Start the firewall: open the state store (refusing a data directory
/// another process holds), load grants and policies, and listen.
pub async fn start(config: &Config, inspector: Arc<dyn Inspector>) -> Result<Running, ServerError> {
    start_with(config, inspector, Extras::default()).await
}

/// The default URL cannot name a CA the client should trust, so clients
/// given it would not check whom they talk to.
fn warn_if_unverified(config: &Config, url: &url::Url) {
    if config.grants.database_url.is_none()
        && url
            .query_pairs()
            .any(|(k, v)| k == "sslmode" && v == "require")
    {
        warn!(
            url = %url,
            "grants hand out sslmode=require URLs, which do not verify the firewall's certificate; set [grants] database_url (e.g. with sslmode=verify-full and sslrootcert)"
        );
    }
}

/// [`start`] with [`Extras`].
pub async fn start_with(
    config: &Config,
    inspector: Arc<dyn Inspector>,
    extras: Extras,
) -> Result<Running, ServerError> {
    // Opening is a few file operations and sled's recovery (or the control
    // database's migrations); brief enough to run here, once, before
    // anything listens.
    let store = Arc::new(
        Store::open_config(&config.state, &config.data_dir, extras.store_faults.clone()).await?,
    );
    let mut database_url = config.database_url()?;
    warn_if_unverified(config, &database_url);
    let mut background = Vec::new();

    // The audit log first: nothing happens that it does not see.
    let webhook = match &config.approvals.webhook {
        Some(w) => Some(Arc::new(crate::approvals::notify::Webhook::from_config(w)?)),
        None => None,
    };
    let (audit, writer) = open_audit(config, &store, webhook.clone()).await?;
    background.push(writer);

    let grants = Grants::open(store.clone(), audit.clone()).await?;
    let dev = dev_credentials(&config.dev_credentials, grants.salts())?;
    if !dev.is_empty() {
        warn!(
            count = dev.len(),
            "dev_credentials are configured: standing secrets that bypass grants; not for production"
        );
    }
    let grants = Arc::new(grants.with_dev_credentials(dev));
    info!(active = grants.active_count(), dir = %config.data_dir.display(), "grants loaded");
    let policies = load_policies(config, inspector.as_ref(), &audit).await?;
    // Approvals are decided over the admin API; without it, held
    // statements are refused.
    let approvals = match config.admin.listen {
        Some(_) => {
            let notifier = match (webhook, extras.approval_sink) {
                (Some(w), _) => Notifier::Webhook(w),
                (None, Some(sink)) => Notifier::Sink(sink),
                (None, None) => Notifier::Log,
            };
            Some(Approvals::open(store.clone(), &config.approvals, notifier, audit.clone()).await?)
        }
        None => None,
    };
    let server = Server::bind(
        config,
        policies,
        Services {
            credentials: grants.clone(),
            inspector,
            approvals: approvals.clone(),
            audit: audit.clone(),
        },
    )
    .await?;
    let pg_addr = server.local_addr();
    if database_url.port() == Some(0) {
        // Listening on port 0 picked a free port: that is the one to use.
        let _ = database_url.set_port(Some(pg_addr.port()));
    }
    grants.set_database_url(database_url);
    let shared = server.shared();
    let (controller, shutdown) = ShutdownController::new();
    let controller = Arc::new(controller);

    let (admin, admin_addr) = match (config.admin.listen, &config.admin.token) {
        (Some(addr), Some(token)) => {
            let token = token.read("admin.token")?;
            let (task, bound) =
                start_admin(addr, token, (&shared, &grants, &store), &controller).await?;
            if let (Some(a), Some(bound)) = (&approvals, bound) {
                let url = config
                    .approvals
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{bound}"));
                a.set_public_url(&url);
                background.push(tokio::spawn(crate::approvals::expirer(
                    a.clone(),
                    controller.subscribe(),
                )));
            }
            (Some(task), bound)
        }
        _ => (None, None),
    };

    // Several instances on one control database: hear what the others
    // change (no-ops for the embedded store).
    background.push(tokio::spawn(grants.clone().follow(controller.subscribe())));
    if let Some(a) = &approvals {
        background.push(tokio::spawn(a.clone().follow(controller.subscribe())));
    }
    background.push(tokio::spawn(crate::proxy::sweeper::sweeper(
        grants.clone(),
        shared.clone(),
        controller.subscribe(),
    )));
    let c = controller.clone();
    let server = tokio::spawn(server.run(shutdown, c));
    Ok(Running {
        pg_addr,
        admin_addr,
        shared,
        grants,
        controller,
        server,
        admin,
        background,
        policies_dir: config.policies_dir.clone(),
    })
}

/// Open the signed log, chaining on from what is stored, and record the
/// start.
async fn open_audit(
    config: &Config,
    store: &Arc<Store>,
    webhook: Option<Arc<crate::approvals::notify::Webhook>>,
) -> Result<(Audit, tokio::task::JoinHandle<()>), ServerError> {
    let key_path = config
        .audit
        .key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(AUDIT_KEY_FILE));
    let key = crate::audit::key::load_or_create(&key_path, config.audit.key_file.is_none())?;
    let (audit, writer) = Audit::start(
        store.clone(),
        key,
        &config.audit,
        config.state.queue,
        webhook.map(checkpoint_poster),
    )
    .await?;
    audit
        .append(Event::DaemonStart {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
        })
        .await?;
    info!(public_key = audit.public_key(), "audit log open");
    Ok((audit, writer))
}

/// Load the policies, hand them to the inspector and record it.
async fn load_policies(
    config: &Config,
    inspector: &dyn Inspector,
    audit: &Audit,
) -> Result<Arc<PolicySet>, ServerError> {
    let policies = Arc::new(PolicySet::load_dir(&config.policies_dir)?);
    info!(
        roles = policies.roles.len(),
        identities = policies.identities.len(),
        dir = %config.policies_dir.display(),
        "policies loaded"
    );
    inspector.reload(policies.clone())?;
    audit
        .append(Event::PolicyLoaded {
            reload: false,
            roles: policies.roles.len(),
            identities: policies.identities.len(),
            dir: config.policies_dir.display().to_string(),
        })
        .await?;
    Ok(policies)
}

/// Bind the admin API and serve it until the firewall drains.
async fn start_admin(
    addr: std::net::SocketAddr,
    token: String,
    (shared, grants, store): (&Arc<crate::proxy::Shared>, &Arc<Grants>, &Arc<Store>),
    controller: &ShutdownController,
) -> Result<(tokio::task::JoinHandle<()>, Option<std::net::SocketAddr>), ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let bound = listener.local_addr().ok();
    let app = crate::admin::router(crate::admin::AdminState::new(
        shared.clone(),
        grants.clone(),
        store.clone(),
        token,
    ));
    let mut sd = controller.subscribe();
    info!(addr = ?bound, "admin API listening");
    let task = tokio::spawn(async move {
        // Peers' addresses, for what `/v1/self` proposals record.
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { sd.reached(Phase::Draining).await })
            .await;
    });
    Ok((task, bound))
}

impl Running {
    /// Reload policies; a bad set keeps the old one and says why.
    pub fn reload_policies(&self) -> Result<(), crate::policy::PolicyError> {
        let set = Arc::new(PolicySet::load_dir(&self.policies_dir)?);
        // The inspector compiles first: if it refuses, nothing changes.
        // The policy inspector holds the one copy logins read too; only an
        // inspector without its own needs the shared copy replaced.
        self.shared.inspector.reload(set.clone())?;
        self.shared
            .policy_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.shared.audit.enqueue_now(Event::PolicyLoaded {
            reload: true,
            roles: set.roles.len(),
            identities: set.identities.len(),
            dir: self.policies_dir.display().to_string(),
        });
        if self.shared.inspector.policies().is_none() {
            *self
                .shared
                .policies
                .write()
                .unwrap_or_else(|p| p.into_inner()) = set;
        }
        info!("policies reloaded");
        Ok(())
    }

    /// Stop accepting, let sessions finish within the grace period, close.
    pub async fn shutdown(self) {
        self.controller.set(Phase::Draining);
        let _ = self.server.await;
        if let Some(a) = self.admin {
            let _ = a.await;
        }
        if let Err(e) = self.shared.audit.append(Event::DaemonStop {}).await {
            warn!(error = %e, "could not record the stop in the audit log");
        }
        // Sessions are gone; stop the background tasks so the store (and
        // the data directory's lock) is released when `self` drops.
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
    }

    /// Run until SIGTERM or SIGINT (reloading policies on SIGHUP), then shut
    /// down gracefully.
    pub async fn until_signal(self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    if let Err(e) = self.reload_policies() {
                        warn!(error = %e, "policy reload failed; keeping the previous policies");
                    }
                }
            }
        }
        info!("shutdown requested");
        self.shutdown().await;
        Ok(())
    }
}
