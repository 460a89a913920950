//! Audit log append throughput (events/s) with group commit, on a real
//! sled store in a temp dir. `cargo bench --bench audit`.
//!
//! - `queued`: events nobody waits for (reads), then one durable append;
//! - `durable xN`: N tasks each appending and waiting for durability in a
//!   loop, as N sessions sending writes do; one flush covers many waiters;
//! - `durable under load`: one durable appender while queued events stream.
//!
//! `PARTS=1 cargo bench --bench audit` times the pieces of one record
//! instead (payload, signature, seal, store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use infraveil::audit::{Audit, Event};
use infraveil::config::AuditConfig;
use infraveil::store::Store;

fn event(i: u64) -> Event {
    Event::Statement {
        session: i % 64,
        statement: i,
        identity: "payments-api".into(),
        role: "app".into(),
        grant: "g_0123456789abcdef".into(),
        via: "query",
        text: format!("UPDATE accounts SET balance = balance + 1 WHERE id = {i}"),
        class: Some("write".into()),
        tables: vec!["accounts".into()],
        decision: infraveil::policy::Action::Allow,
        rule: Some("app.write".into()),
        approval: None,
        ran: None,
    }
}

async fn open() -> (Audit, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let store = Arc::new(Store::open(dir.path()).expect("store"));
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let (audit, _task) = Audit::start(store, key, &AuditConfig::default(), 10_000, None)
        .await
        .expect("audit");
    (audit, dir)
}

fn report(name: &str, n: u64, took: Duration) {
    println!(
        "{name:<28} {n:>8} events in {:>7.1} ms  {:>10.0} events/s",
        took.as_secs_f64() * 1e3,
        n as f64 / took.as_secs_f64()
    );
}

async fn queued(n: u64) {
    let (audit, _dir) = open().await;
    let t = Instant::now();
    for i in 0..n {
        audit.enqueue(event(i)).await.expect("enqueue");
    }
    audit.append(event(n)).await.expect("append");
    report("queued", n + 1, t.elapsed());
}

async fn durable(tasks: u64, each: u64) {
    let (audit, _dir) = open().await;
    let t = Instant::now();
    let mut all = vec![];
    for w in 0..tasks {
        let audit = audit.clone();
        all.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(each as usize);
            for i in 0..each {
                let s = Instant::now();
                audit.append(event(w * each + i)).await.expect("append");
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut lat = vec![];
    for a in all {
        lat.extend(a.await.expect("task"));
    }
    let took = t.elapsed();
    report(&format!("durable x{tasks}"), tasks * each, took);
    lat.sort();
    println!(
        "{:<28} p50 {:.2} ms, p99 {:.2} ms per durable append",
        "",
        lat[lat.len() / 2].as_secs_f64() * 1e3,
        lat[lat.len() * 99 / 100].as_secs_f64() * 1e3
    );
}

async fn durable_under_load(each: u64) {
    let (audit, _dir) = open().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let (audit, stop) = (audit.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                audit.enqueue(event(i)).await.expect("enqueue");
                i += 1;
                if i.is_multiple_of(256) {
                    tokio::task::yield_now().await;
                }
            }
            i
        })
    };
    let t = Instant::now();
    let mut lat = vec![];
    for i in 0..each {
        let s = Instant::now();
        audit.append(event(i)).await.expect("append");
        lat.push(s.elapsed());
    }
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let queued = loader.await.expect("loader");
    lat.sort();
    report("durable under load", each + queued, took);
    println!(
        "{:<28} {queued} queued alongside; p50 {:.2} ms, p99 {:.2} ms per durable append",
        "",
        lat[lat.len() / 2].as_secs_f64() * 1e3,
        lat[lat.len() * 99 / 100].as_secs_f64() * 1e3
    );
}

mod tempdir {
    use std::path::{Path, PathBuf};
    pub struct Dir(PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!(
                "infraveil-bench-audit-{}-{}",
                std::process::id(),
                rand_suffix()
            ));
            Dir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }
}

fn main() {
    // `cargo test --benches` runs this with no `--bench`: keep it short.
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 20 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os("PARTS").is_some() {
        parts();
        return;
    }
    rt.block_on(async {
        queued(200_000 / scale).await;
        for tasks in [1, 8, 64] {
            durable(tasks, 2_000 / scale.min(10) / tasks.min(8)).await;
        }
        durable_under_load(500 / scale.min(10)).await;
    });
}

fn parts() {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let n = 20_000u64;
    let t = Instant::now();
    let mut p = vec![];
    for i in 0..n {
        p.push(event(i).payload(i, 1_700_000_000_000));
    }
    println!(
        "payload {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for x in &p {
        std::hint::black_box(key.sign(x.as_bytes()));
    }
    println!("sign {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    let mut prev = [0u8; 32];
    let mut recs = vec![];
    for (i, x) in p.into_iter().enumerate() {
        let (r, d) = infraveil::audit::chain::seal(i as u64 + 1, &prev, x, None);
        prev = d;
        recs.push(r);
    }
    println!(
        "link (hash, no signature) {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let dir = tempdir::Dir::new();
    let store = Store::open(dir.path()).expect("store");
    let log = infraveil::audit::log::AuditLog::open(&store).expect("log");
    let t = Instant::now();
    for c in recs.chunks(1024) {
        let chunks = infraveil::audit::layout::encode(c).expect("layout");
        log.put(chunks).expect("put");
    }
    println!("put {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
