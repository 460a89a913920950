//! Unit tests of the session side of approvals, through a [`Gate`] over
//! real approvals (a temporary store and audit log): defer runs an
//! approved statement once; wait resumes on approval, and ends on a
//! denial, a cancel or the client leaving, each leaving the request in
//! the right state.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::approvals::Notifier;
use crate::auth::{Candidate, CredentialState};
use crate::classify::Class;
use crate::config::{ApprovalsConfig, AuditConfig, UpstreamConfig};
use crate::store::Store;

/// No grants: only the reason lookup is used, and there is none.
struct NoCredentials;

impl CredentialSource for NoCredentials {
    fn salt(&self, _: &str) -> Vec<u8> {
        Vec::new()
    }
    fn candidates(&self, _: &str) -> Vec<Candidate> {
        Vec::new()
    }
    fn state(&self, _: &str) -> CredentialState {
        CredentialState::Gone
    }
}

struct Fixture {
    approvals: Arc<Approvals>,
    upstream: UpstreamConnector,
    policies: Arc<PolicySet>,
    dir: std::path::PathBuf,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "infraveil-hold-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 4]>())
        ));
        let store = Arc::new(Store::open(&dir).unwrap());
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let (audit, _writer) =
            crate::audit::Audit::start(store.clone(), key, &AuditConfig::default(), 10_000, None)
                .await
                .unwrap();
        let config = ApprovalsConfig {
            timeout: Duration::from_secs(30),
            ..Default::default()
        };
        let approvals = Approvals::open(store, &config, Notifier::Log, audit)
            .await
            .unwrap();
        approvals.set_public_url("http://127.0.0.1:1");
        let policies = Arc::new(
            PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap(),
        );
        // Nothing listens on port 1: the preview says it has no estimate.
        let upstream = UpstreamConnector {
            config: UpstreamConfig {
                host: "127.0.0.1".into(),
                port: 1,
                tls: Default::default(),
                ca_file: None,
                server_name: None,
                connect_timeout: Duration::from_millis(200),
                passwords: Default::default(),
            },
            tls: None,
            passwords: Default::default(),
        };
        Fixture {
            approvals,
            upstream,
            policies,
            dir,
        }
    }

    fn gate(&self) -> Gate<'_> {
        Gate {
            approvals: &self.approvals,
            upstream: &self.upstream,
            credentials: &NoCredentials,
            policies: self.policies.clone(),
            max_message_bytes: 1 << 20,
        }
    }

    async fn approve(&self, id: &str, approve: bool) {
        self.approvals
            .decide(
                id,
                "oncall",
                approve,
                "test",
                Some("checked".into()),
                &self.policies,
            )
            .await
            .unwrap();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn held(mode: ApprovalMode) -> Held {
    Held {
        class: Class::Destructive,
        rule: "roles.deployer.approve".into(),
        reason: "DROP TABLE public.t".into(),
        tables: vec!["public.t".into()],
        relations: Vec::new(),
        approvers: vec!["oncall".into()],
        mode,
        error: PgError::approval_unavailable("unused"),
    }
}

const SQL: &str = "DROP TABLE t";

fn asked() -> Asked<'static> {
    Asked {
        sql: SQL,
        types: &[],
        values: &[],
    }
}

/// A client that sends nothing and stays: the wait only ends by decision.
fn quiet_client() -> (
    FrameReader<tokio::io::DuplexStream>,
    tokio::io::DuplexStream,
) {
    let (ours, theirs) = tokio::io::duplex(1024);
    (FrameReader::new(ours, 1 << 20), theirs)
}

fn refused_id(o: &Outcome) -> String {
    match o {
        Outcome::Refuse(e) => {
            assert_eq!(e.code, "42501", "{e}");
            let id = e
                .message
                .split("approval request ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_else(|| panic!("no request id in {e}"));
            id.to_owned()
        }
        Outcome::Run(id) => panic!("ran {id}"),
        Outcome::ClientGone => panic!("client gone"),
    }
}

#[tokio::test]
async fn defer_asks_once_and_runs_an_approval_exactly_once() {
    let f = Fixture::new().await;
    let gate = f.gate();
    let (info, held) = (
        SessionInfo::for_test("ops-agent", "agent"),
        held(ApprovalMode::Defer),
    );
    let (mut client, _keep) = quiet_client();
    let cancel = Notify::new();
    let first = gate
        .hold(&info, &held, &asked(), &mut client, &cancel)
        .await;
    let id = refused_id(&first);
    // Asked again before a decision: the same request, not a second one.
    let again = gate
        .hold(&info, &held, &asked(), &mut client, &cancel)
        .await;
    assert_eq!(refused_id(&again), id);
    assert_eq!(f.approvals.list(false).len(), 1);
    // Another text, or another identity, is another binding.
    let other = SessionInfo::for_test("alice", "agent");
    let theirs = gate
        .hold(&other, &held, &asked(), &mut client, &cancel)
        .await;
    assert_ne!(refused_id(&theirs), id);

    f.approve(&id, true).await;
    match gate
        .hold(&info, &held, &asked(), &mut client, &cancel)
        .await
    {
        Outcome::Run(ran) => assert_eq!(ran, id),
        _ => panic!("the approved statement runs"),
    }
    // Once: the next identical statement asks anew.
    let after = gate
        .hold(&info, &held, &asked(), &mut client, &cancel)
        .await;
    assert_ne!(refused_id(&after), id);
    assert_eq!(f.approvals.get(&id).unwrap().status, Status::Executed);
}

/// Run a `wait` hold in a task; returns it and the request id once it is
/// pending.
async fn waiting(
    f: &Arc<Fixture>,
    client: FrameReader<tokio::io::DuplexStream>,
    cancel: Arc<Notify>,
) -> (tokio::task::JoinHandle<Outcome>, String) {
    let task = {
        let f = f.clone();
        tokio::spawn(async move {
            let mut client = client;
            let (info, held) = (
                SessionInfo::for_test("alice", "deployer"),
                held(ApprovalMode::Wait),
            );
            f.gate()
                .hold(&info, &held, &asked(), &mut client, &cancel)
                .await
        })
    };
    for _ in 0..200 {
        if let Some(r) = f
            .approvals
            .list(false)
            .into_iter()
            .find(|r| r.status == Status::Pending)
        {
            return (task, r.id);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pending request");
}

#[tokio::test]
async fn wait_resumes_on_approval_and_ends_on_denial() {
    let f = Arc::new(Fixture::new().await);
    let (client, _keep) = quiet_client();
    let (task, id) = waiting(&f, client, Arc::new(Notify::new())).await;
    f.approve(&id, true).await;
    match task.await.unwrap() {
        Outcome::Run(ran) => assert_eq!(ran, id),
        _ => panic!("runs once approved"),
    }
    assert_eq!(f.approvals.get(&id).unwrap().status, Status::Executed);

    let (client, _keep) = quiet_client();
    let (task, id) = waiting(&f, client, Arc::new(Notify::new())).await;
    f.approve(&id, false).await;
    match task.await.unwrap() {
        Outcome::Refuse(e) => {
            assert_eq!(e.code, "42501");
            assert!(e.message.starts_with("denied by oncall"), "{e}");
            assert_eq!(e.detail.as_deref(), Some("checked"));
        }
        _ => panic!("a denial refuses"),
    }
}

#[tokio::test]
async fn wait_ends_on_cancel_or_a_client_that_leaves() {
    let f = Arc::new(Fixture::new().await);
    let cancel = Arc::new(Notify::new());
    let (client, _keep) = quiet_client();
    let (task, id) = waiting(&f, client, cancel.clone()).await;
    cancel.notify_one();
    match task.await.unwrap() {
        Outcome::Refuse(e) => assert_eq!(e.code, "57014", "{e}"),
        _ => panic!("a cancel refuses"),
    }
    assert_eq!(f.approvals.get(&id).unwrap().status, Status::Cancelled);

    let (client, theirs) = quiet_client();
    let (task, id) = waiting(&f, client, Arc::new(Notify::new())).await;
    drop(theirs);
    assert!(matches!(task.await.unwrap(), Outcome::ClientGone));
    assert_eq!(f.approvals.get(&id).unwrap().status, Status::Cancelled);
}
