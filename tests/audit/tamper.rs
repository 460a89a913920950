//! Tampering with the stored log is caught by `veilctl audit verify`.

use std::path::{Path, PathBuf};

use super::common::*;
use super::*;
use infraveil::audit::chain;

/// Copy a stopped daemon's data directory (to tamper with a copy per case).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Open the copy's audit tree the way someone with the disk would. The
/// daemon stores records in chunks (`infraveil::audit::layout`); the tree
/// is first rewritten one record a value, as JSON (the layout logs had
/// before chunks, which the daemon still reads), so a case can edit,
/// drop or swap single records by seq.
fn with_tree(dir: &Path, f: impl FnOnce(&sled::Tree)) {
    let db = sled::open(dir.join("state")).unwrap();
    let tree = db.open_tree("audit").unwrap();
    let mut records = Vec::new();
    for item in tree.iter() {
        let (_, v) = item.unwrap();
        records.extend(infraveil::audit::layout::decode(&v).unwrap());
    }
    tree.clear().unwrap();
    for r in &records {
        put(&tree, r.seq, r);
    }
    f(&tree);
    db.flush().unwrap();
}

fn record(tree: &sled::Tree, seq: u64) -> chain::Record {
    serde_json::from_slice(&tree.get(seq.to_be_bytes()).unwrap().unwrap()).unwrap()
}

fn put(tree: &sled::Tree, seq: u64, r: &chain::Record) {
    tree.insert(seq.to_be_bytes(), serde_json::to_vec(r).unwrap())
        .unwrap();
}

/// A stopped daemon's data dir with some history, and its public key.
async fn history() -> (PathBuf, String, PathBuf) {
    let root = scratch_dir();
    let data = root.join("data");
    let p = Proxy::start(ProxyOptions {
        data_dir: Some(data.clone()),
        ..ProxyOptions::with_grants()
    })
    .await;
    let db = fresh_db("audit_tamper");
    let pw = p.issue("alice", "deployer").await;
    let c = p.connect_with("alice", &db, &pw).await;
    c.batch_execute("CREATE TABLE t (id int)").await.unwrap();
    for i in 0..10 {
        c.batch_execute(&format!("INSERT INTO t VALUES ({i})"))
            .await
            .unwrap();
    }
    // Many records at once: the writer takes them as one batch, under one
    // signature.
    let c = many_reads(c).await;
    let key = p.running().shared.audit.public_key().to_owned();

    // While the daemon runs, offline verification is refused, not racy.
    let (ok, _, err) =
        veilctl_offline(&["audit", "verify", "--data-dir", &data.display().to_string()]).await;
    assert!(!ok && err.contains("daemon stopped"), "{err}");

    drop(c);
    p.shutdown().await;
    (data, key, root)
}

#[tokio::test]
async fn tampering_with_the_stored_log_is_caught() {
    let (data, key, root) = history().await;
    let v = verify_dir(&data, &key, &[]).await;
    assert_eq!(v["ok"], true, "{v}");
    let head_seq = v["head_seq"].as_u64().unwrap();
    let pin = format!("{head_seq}:{}", v["head_hash"].as_str().unwrap());
    assert!(head_seq > 20, "{v}");
    let k = head_seq / 2;

    let case = |name: &str| {
        let d = root.join(name);
        copy_dir(&data, &d);
        d
    };

    // Edit a payload (the record keeps its old hash and signature).
    let d = case("edit");
    with_tree(&d, |t| {
        let mut r = record(t, k);
        r.payload = r.payload.replacen("\"type\"", "\"tampered\":1,\"type\"", 1);
        put(t, k, &r);
    });
    assert_eq!(fault(&verify_dir(&d, &key, &[]).await), ("hash".into(), k));

    // ...and recompute its hash: then it no longer matches its signature
    // if it has one, and the next record no longer links to it.
    let d = case("edit-rehash");
    let mut signed = false;
    with_tree(&d, |t| {
        let mut r = record(t, k);
        signed = r.sig.is_some();
        r.payload = r.payload.replacen("\"type\"", "\"tampered\":1,\"type\"", 1);
        let prev: [u8; 32] = hex::decode(&r.prev).unwrap().try_into().unwrap();
        r.hash = hex::encode(chain::hash(&prev, &r.payload));
        put(t, k, &r);
    });
    assert_eq!(
        fault(&verify_dir(&d, &key, &[]).await),
        if signed {
            ("signature".into(), k)
        } else {
            ("link".into(), k + 1)
        }
    );

    // Drop a record.
    let d = case("drop");
    with_tree(&d, |t| {
        t.remove(k.to_be_bytes()).unwrap();
    });
    assert_eq!(
        fault(&verify_dir(&d, &key, &[]).await),
        ("gap".into(), k + 1)
    );

    // Swap two records.
    let d = case("swap");
    with_tree(&d, |t| {
        let (a, b) = (record(t, k), record(t, k + 1));
        put(t, k, &b);
        put(t, k + 1, &a);
    });
    assert_eq!(
        fault(&verify_dir(&d, &key, &[]).await),
        ("order".into(), k + 1)
    );

    // Which records carry a signature (the last of each batch).
    let mut signed_seqs = Vec::new();
    with_tree(&data, |t| {
        for s in 1..=head_seq {
            if record(t, s).sig.is_some() {
                signed_seqs.push(s);
            }
        }
    });
    assert!(signed_seqs.len() >= 2, "{signed_seqs:?}");
    assert_eq!(signed_seqs.last(), Some(&head_seq), "the log ends signed");
    assert!(
        signed_seqs.len() < head_seq as usize,
        "batches share one signature: {signed_seqs:?}"
    );

    // Truncate the tail at a batch's end: the chain alone cannot tell, a
    // checkpoint can. Cut inside a batch, the tail is unsigned.
    let cut = signed_seqs[signed_seqs.len() - 2];
    let d = case("truncate");
    with_tree(&d, |t| {
        for s in cut + 1..=head_seq {
            t.remove(s.to_be_bytes()).unwrap();
        }
    });
    assert_eq!(verify_dir(&d, &key, &[]).await["ok"], true);
    assert_eq!(
        fault(&verify_dir(&d, &key, &["--expect-head", &pin]).await),
        ("truncated".into(), cut)
    );
    if let Some(inside) = (1..head_seq).rev().find(|s| !signed_seqs.contains(s)) {
        let d = case("truncate-inside");
        with_tree(&d, |t| {
            for s in inside + 1..=head_seq {
                t.remove(s.to_be_bytes()).unwrap();
            }
        });
        assert_eq!(fault(&verify_dir(&d, &key, &[]).await).0, "unsigned");
    }

    // Remove the last signature: what it vouched for is vouched for by
    // nothing.
    let d = case("unsign");
    with_tree(&d, |t| {
        let mut r = record(t, head_seq);
        r.sig = None;
        put(t, head_seq, &r);
    });
    assert_eq!(fault(&verify_dir(&d, &key, &[]).await).0, "unsigned");

    // Forge records after the last signature, with the daemon stopped: they
    // link, but nothing signs them. verify fails, the daemon refuses to
    // chain onto them, and once set aside it starts again.
    let d = case("append");
    with_tree(&d, |t| {
        let last = record(t, head_seq);
        let mut prev: [u8; 32] = hex::decode(&last.hash).unwrap().try_into().unwrap();
        for s in head_seq + 1..=head_seq + 3 {
            let payload = format!(
                "{{\"type\":\"statement\",\"identity\":\"mallory\",\"text\":\"forged\",\"seq\":{s}}}"
            );
            let (r, h) = chain::seal(s, &prev, payload, None);
            put(t, s, &r);
            prev = h;
        }
    });
    assert_eq!(
        fault(&verify_dir(&d, &key, &[]).await),
        ("unsigned".into(), head_seq + 1)
    );
    let mut config = ProxyOptions::with_grants();
    config.data_dir = Some(d.clone());
    let refused = Proxy::try_start(config)
        .await
        .err()
        .expect("refuses to start");
    assert!(
        refused.contains("no signature vouches for") && refused.contains("set-aside"),
        "{refused}"
    );
    let (ok, out, err) =
        veilctl_offline(&["audit", "set-aside", "--data-dir", &d.display().to_string()]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("{} to {}", head_seq + 1, head_seq + 3)),
        "{out}"
    );
    assert_eq!(verify_dir(&d, &key, &[]).await["ok"], true);
    let mut config = ProxyOptions::with_grants();
    config.data_dir = Some(d.clone());
    Proxy::try_start(config)
        .await
        .expect("starts once the forged tail is set aside")
        .shutdown()
        .await;

    // Re-sign the whole log with another key (and replace the key file):
    // consistent on its own, caught against the public key kept elsewhere.
    let d = case("resign");
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    with_tree(&d, |t| {
        let mut prev = chain::GENESIS;
        for s in 1..=head_seq {
            let old = record(t, s);
            let (r, h) = chain::seal(s, &prev, old.payload, old.sig.map(|_| &other));
            put(t, s, &r);
            prev = h;
        }
    });
    std::fs::write(
        d.join(infraveil::daemon::AUDIT_KEY_FILE),
        format!("{}\n", hex::encode(other.to_bytes())),
    )
    .unwrap();
    assert_eq!(
        fault(&verify_dir(&d, &key, &[]).await),
        ("signature".into(), signed_seqs[0])
    );
    // Without the pinned key veilctl trusts the data dir's key, and says so.
    let (ok, _, err) =
        veilctl_offline(&["audit", "verify", "--data-dir", &d.display().to_string()]).await;
    assert!(ok && err.contains("--public-key"), "{err}");

    // The untouched original still verifies, text output included.
    let (ok, out, _) = veilctl_offline(&[
        "audit",
        "verify",
        "--data-dir",
        &data.display().to_string(),
        "--public-key",
        &key,
        "--expect-head",
        &pin,
    ])
    .await;
    assert!(ok && out.starts_with("ok: "), "{out}");
    let (ok, out, _) = veilctl_offline(&[
        "audit",
        "public-key",
        "--data-dir",
        &data.display().to_string(),
    ])
    .await;
    assert!(ok);
    assert_eq!(out.trim(), key);
}
