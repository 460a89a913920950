//! Unit tests of the writer: what a durable append promises, batches and
//! checkpoints, and failing closed when the store fails.

use std::time::Duration;

use super::*;
use crate::store::Faults;

fn temp_store(faults: Faults) -> (Arc<Store>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "infraveil-audit-unit-{}-{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    ));
    (Arc::new(Store::open_with(&dir, faults).unwrap()), dir)
}

fn config(read_window: Duration, checkpoint_every: u64) -> AuditConfig {
    AuditConfig {
        key_file: None,
        read_window,
        checkpoint_every,
        checkpoint_interval: Duration::from_secs(3600),
    }
}

fn expired(i: usize) -> Event {
    Event::GrantExpired {
        grant: format!("g{i}"),
        identity: "alice".into(),
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

/// Records nobody waits for are held for the read window; a durable append
/// after them writes and flushes them too, in order, before it returns.
#[tokio::test]
async fn a_durable_append_makes_everything_before_it_durable() {
    let (store, dir) = temp_store(Faults::default());
    let (audit, writer) = Audit::start(
        store.clone(),
        key(),
        &config(Duration::from_secs(60), 1_000),
        10_000,
        None,
    )
    .await
    .unwrap();
    for i in 0..300 {
        audit.enqueue(expired(i)).await.unwrap();
    }
    let seq = audit
        .append(Event::DaemonStop {})
        .await
        .expect("durable append");
    assert_eq!(seq, 301);
    let log = AuditLog::open(&store).unwrap();
    let records: Vec<_> = log.from(0).map(Result::unwrap).collect();
    assert_eq!(records.len(), 301);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
    }
    assert!(records[..300].iter().enumerate().all(|(i, r)| {
        let v: serde_json::Value = serde_json::from_str(&r.payload).unwrap();
        v["type"] == "grant.expired" && v["grant"] == format!("g{i}")
    }));
    // The batch ends signed, and the whole log verifies under the key.
    assert!(records.last().unwrap().sig.is_some());
    let summary = verify_store(&store, key().verifying_key(), None).unwrap();
    assert_eq!(summary.records, 301);
    drop(audit);
    writer.await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Without anyone waiting, the read window alone makes records durable.
#[tokio::test]
async fn the_read_window_flushes_what_nobody_waits_for() {
    let (store, dir) = temp_store(Faults::default());
    let (audit, _writer) = Audit::start(
        store.clone(),
        key(),
        &config(Duration::from_millis(50), 1_000),
        10_000,
        None,
    )
    .await
    .unwrap();
    audit.enqueue(expired(1)).await.unwrap();
    let log = AuditLog::open(&store).unwrap();
    let mut seen = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = log.head().unwrap();
        if seen.is_some() {
            break;
        }
    }
    assert_eq!(seen.map(|r| r.seq), Some(1));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A checkpoint every N records: the chain's head, signed.
#[tokio::test]
async fn checkpoints_come_every_n_records() {
    let (store, dir) = temp_store(Faults::default());
    let (audit, _writer) = Audit::start(
        store.clone(),
        key(),
        &config(Duration::from_secs(60), 10),
        10_000,
        None,
    )
    .await
    .unwrap();
    assert!(audit.last_checkpoint().is_none());
    for i in 0..25 {
        audit.append(expired(i)).await.unwrap();
    }
    let c = audit
        .last_checkpoint()
        .expect("a checkpoint after 10 records");
    let head = AuditLog::open(&store).unwrap().head().unwrap().unwrap();
    assert!(c.seq >= 10 && c.seq <= head.seq, "{c:?} head {}", head.seq);
    std::fs::remove_dir_all(dir).unwrap();
}

/// When the store fails, the append that hit it fails, and so does every
/// one after it: nothing more is accepted until an operator looks.
#[tokio::test]
async fn a_failing_store_fails_appends_and_everything_after() {
    let faults = Faults::default();
    let (store, dir) = temp_store(faults.clone());
    let (audit, _writer) = Audit::start(
        store.clone(),
        key(),
        &config(Duration::from_secs(60), 1_000),
        10_000,
        None,
    )
    .await
    .unwrap();
    audit.append(expired(0)).await.unwrap();
    assert!(audit.healthy());
    faults.fail_writes(true);
    let e = audit.append(expired(1)).await.unwrap_err();
    assert!(e.to_string().contains("fault injected"), "{e}");
    assert!(!audit.healthy());
    // Even once the disk is back: the chain state is in doubt.
    faults.fail_writes(false);
    assert!(audit.enqueue(expired(2)).await.is_err());
    assert!(audit.append(expired(3)).await.is_err());
    // What was durable before stays, and verifies.
    let summary = verify_store(&store, key().verifying_key(), None).unwrap();
    assert_eq!(summary.records, 1);
    std::fs::remove_dir_all(dir).unwrap();
}
