//! sqlx through the firewall, in the test's own process (run by the `sqlx`
//! test in `tests/clients.rs`, with the same tables, identities and held
//! statements as the scripts beside this file). sqlx always uses the
//! extended protocol with binary results and caches statements per
//! connection; it has no cancel API.

use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::{Connection, PgConnection, Row};

/// The SQLSTATE of a database error.
fn code(e: sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// Everything, as alice (`url`) and ops-agent (`agent_url`), both in the
/// demo's URL form.
pub async fn run(url: &str, agent_url: &str) {
    let mut c = PgConnection::connect(url)
        .await
        .expect("sqlx connects with the demo's URL");
    let plain = url.replace("sslmode=verify-full", "sslmode=disable");
    let refused = PgConnection::connect(&plain)
        .await
        .expect_err("plain TCP refused");
    assert!(refused.to_string().contains("TLS"), "{refused}");
    types_and_a_large_bytea(&mut c).await;
    transactions(&mut c).await;
    errors_then_work(&mut c).await;
    prepared_reuse(&mut c).await;
    copy_in_and_out(&mut c).await;
    stream_100k(&mut c).await;
    listen_notify(&mut c, url).await;
    held_wait(&mut c).await;
    pool(url).await;
    c.close().await.unwrap();
    held_defer(agent_url).await;
}

/// Parameters and types, binary both ways, and an 8 MB `bytea`.
async fn types_and_a_large_bytea(c: &mut PgConnection) {
    let data: Vec<u8> = (0..8 * 1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let row = sqlx::query(
        "SELECT $1::int4, $2::text, $3::float8, $4::bool, $5::int4[], $6::text, $7::bytea, length($7)",
    )
    .bind(42i32)
    .bind("ünïcödé ✓")
    .bind(1.5f64)
    .bind(true)
    .bind(vec![1i32, 2, 3])
    .bind(None::<String>)
    .bind(&data)
    .fetch_one(&mut *c)
    .await
    .unwrap();
    assert_eq!(row.get::<i32, _>(0), 42);
    assert_eq!(row.get::<String, _>(1), "ünïcödé ✓");
    assert_eq!(row.get::<f64, _>(2), 1.5);
    assert!(row.get::<bool, _>(3));
    assert_eq!(row.get::<Vec<i32>, _>(4), vec![1, 2, 3]);
    assert_eq!(row.get::<Option<String>, _>(5), None);
    assert!(
        row.get::<Vec<u8>, _>(6) == data,
        "the 8 MB bytea came back changed"
    );
    assert_eq!(row.get::<i32, _>(7), 8 * 1024 * 1024);
}

/// Transactions: commit, rollback, a savepoint (nested `begin`) rolled back.
async fn transactions(c: &mut PgConnection) {
    let mut tx = c.begin().await.unwrap();
    sqlx::query("INSERT INTO items (id, name) VALUES (1, 'kept')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = c.begin().await.unwrap();
    sqlx::query("INSERT INTO items (id, name) VALUES (2, 'rolled back')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut inner = tx.begin().await.unwrap();
    sqlx::query("INSERT INTO items (id, name) VALUES (3, 'inner')")
        .execute(&mut *inner)
        .await
        .unwrap();
    inner.rollback().await.unwrap();
    tx.rollback().await.unwrap();
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM items ORDER BY id")
        .fetch_all(&mut *c)
        .await
        .unwrap();
    assert_eq!(ids, vec![1]);
}

/// An error (PostgreSQL's, the firewall's), then a working statement.
async fn errors_then_work(c: &mut PgConnection) {
    let e = sqlx::query("SELECT 1/0")
        .execute(&mut *c)
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("22012"));
    let e = sqlx::query("SET ROLE postgres")
        .execute(&mut *c)
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("42501"));
    let two: i32 = sqlx::query_scalar("SELECT $1::int4 + 1")
        .bind(1)
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(two, 2);
}

/// One statement, cached by sqlx and reused.
async fn prepared_reuse(c: &mut PgConnection) {
    sqlx::query("INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(100, 119) g")
        .execute(&mut *c)
        .await
        .unwrap();
    for i in 100..120 {
        let name: String = sqlx::query_scalar("SELECT name FROM items WHERE id = $1")
            .bind(i)
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(name, format!("n{i}"));
    }
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT name FROM items WHERE id = $1'",
    )
    .fetch_one(&mut *c)
    .await
    .unwrap();
    assert_eq!(n, 1);
}

/// COPY in and out.
async fn copy_in_and_out(c: &mut PgConnection) {
    let mut copy = c
        .copy_in_raw("COPY items (id, name) FROM STDIN")
        .await
        .unwrap();
    let text: String = (0..500)
        .map(|i| format!("{}\tcopied {i}\n", 1000 + i))
        .collect();
    copy.send(text.as_bytes()).await.unwrap();
    assert_eq!(copy.finish().await.unwrap(), 500);
    let out: Vec<bytes::Bytes> = c
        .copy_out_raw("COPY (SELECT id, name FROM items WHERE id >= 1000 ORDER BY id) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(out.concat(), text.as_bytes());
}

/// 100000 rows streamed.
async fn stream_100k(c: &mut PgConnection) {
    let mut rows =
        sqlx::query_scalar::<_, i32>("SELECT g FROM generate_series(1, 100000) g").fetch(&mut *c);
    let (mut n, mut total) = (0u64, 0u64);
    while let Some(g) = rows.try_next().await.unwrap() {
        n += 1;
        total += g as u64;
    }
    drop(rows);
    assert_eq!((n, total), (100_000, 100_000 * 100_001 / 2));
}

/// LISTEN/NOTIFY, to an idle `PgListener`.
async fn listen_notify(c: &mut PgConnection, url: &str) {
    let mut listener = sqlx::postgres::PgListener::connect(url).await.unwrap();
    listener.listen("infraveil_chan").await.unwrap();
    sqlx::query("NOTIFY infraveil_chan, 'one'")
        .execute(&mut *c)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('infraveil_chan', $1)")
        .bind("two")
        .execute(&mut *c)
        .await
        .unwrap();
    for want in ["one", "two"] {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a notification")
            .unwrap();
        assert_eq!((n.channel(), n.payload()), ("infraveil_chan", want));
    }
}

/// A held DELETE waits for its approval (wait mode).
async fn held_wait(c: &mut PgConnection) {
    let done = sqlx::query("DELETE FROM held")
        .execute(&mut *c)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 10);
}

/// A pool of three serving twelve queries at once.
async fn pool(url: &str) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect(url)
        .await
        .unwrap();
    let all = futures_util::future::join_all((0..12).map(|i| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>("SELECT $1::int4")
                .bind(i)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(all, (0..12).collect::<Vec<_>>());
    pool.close().await;
}

/// A deferred INSERT: refused with its approval id, run once approved.
async fn held_defer(agent_url: &str) {
    let mut agent = sqlx::PgConnection::connect(agent_url).await.unwrap();
    let insert = || {
        sqlx::query("INSERT INTO held (id, v) VALUES ($1, $2)")
            .bind(100)
            .bind("deferred")
    };
    let e = insert().execute(&mut agent).await.unwrap_err();
    let db = e.as_database_error().expect("a database error");
    assert_eq!(db.code().as_deref(), Some("42501"));
    assert!(
        db.message().contains("approval request a-"),
        "{}",
        db.message()
    );
    let mut ran = false;
    for _ in 0..100 {
        match insert().execute(&mut agent).await {
            Ok(done) => {
                assert_eq!(done.rows_affected(), 1);
                ran = true;
                break;
            }
            Err(e) => {
                assert_eq!(code(e).as_deref(), Some("42501"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert!(ran, "never approved");
    agent.close().await.unwrap();
}
