//! Statements classified (and judged) per second on an OLTP mix, with and
//! without the decision cache. `cargo bench --bench classify`; criterion
//! prints time per iteration and throughput in statements/s.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infraveil::classify::classify;
use infraveil::policy::{Engine, PolicySet, Prepared};

/// What an application's pool sends most: point reads, joins, inserts,
/// keyed updates and deletes, transaction control (ORM and driver shapes).
const OLTP: &[&str] = &[
    "SELECT \"users\".* FROM \"users\" WHERE \"users\".\"id\" = $1 LIMIT $2",
    "SELECT 1 AS one FROM \"users\" WHERE \"users\".\"email\" = $1 LIMIT $2",
    "SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1",
    "SELECT id, total FROM orders WHERE customer_id = $1 AND status = ANY($2) ORDER BY id LIMIT 50",
    "SELECT count(*) FROM orders WHERE created_at > now() - interval '1 day'",
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "INSERT INTO orders (customer_id, total) VALUES ($1, $2) RETURNING id",
    "INSERT INTO \"users\" (\"email\", \"created_at\", \"updated_at\") VALUES ($1, $2, $3) RETURNING \"id\"",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "UPDATE orders SET status = 'paid', paid_at = now() WHERE id = $1 AND status = 'pending' RETURNING id",
    "DELETE FROM sessions WHERE id = $1",
    "INSERT INTO counters (key, n) VALUES ($1, 1) ON CONFLICT (key) DO UPDATE SET n = counters.n + 1",
    "BEGIN",
    "COMMIT",
    "SELECT * FROM jobs WHERE locked_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
    "SET statement_timeout = '5s'",
];

fn engine(cached: bool) -> Engine {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let set = Arc::new(PolicySet::load_dir(&dir).expect("example policies"));
    if cached {
        Engine::new(set).expect("compile")
    } else {
        Engine::uncached(set).expect("compile")
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("oltp_mix");
    g.throughput(Throughput::Elements(OLTP.len() as u64));
    g.bench_function("classify", |b| {
        b.iter(|| {
            for sql in OLTP {
                black_box(classify(black_box(sql)));
            }
        })
    });
    let prepared = Prepared::default();
    for (name, cached) in [("judge_uncached", false), ("judge_cached", true)] {
        let e = engine(cached);
        g.bench_function(name, |b| {
            b.iter(|| {
                for sql in OLTP {
                    let a = e.analyze(black_box(sql));
                    black_box(e.judge("deploy-bot", "deployer", &a, &prepared));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
