//! Connection lifecycle and bad input: authentication failures, malformed
//! and oversized messages, silent and non-reading clients, upstream down and
//! back, graceful shutdown. Each case ends only its own connection.

mod common;

use std::time::Duration;

use common::*;
use pgwire::messages::Message;
use pgwire::messages::startup::{GssEncRequest, SslRequest};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_identity_look_the_same() {
    let db = fresh_db("auth");
    let p = Proxy::start(ProxyOptions::default()).await;
    let e = p.try_connect("alice", &db, "wrong").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    let e2 = p.try_connect("mallory", &db, "wrong").await.unwrap_err();
    assert_eq!(sqlstate(&e2), "28P01");
    let m1 = e.as_db_error().unwrap().message().replace("alice", "X");
    let m2 = e2.as_db_error().unwrap().message().replace("mallory", "X");
    assert_eq!(m1, m2);
    // psql shows the same.
    let (ok, _, err) = psql(
        &format!("postgres://alice:nope@127.0.0.1:{}/{db}", p.port),
        &["-c", "select 1"],
    )
    .await;
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    // The right password works, as the readonly identity too (app_read).
    let c = p.connect("rita", "app").await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM customers").await;
    assert_eq!(n, 50);
    // Defense in depth: app_read cannot write even though nothing denies it yet.
    let e = c.execute("DELETE FROM customers", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_refuses_options_and_foreign_encodings() {
    let p = Proxy::start(ProxyOptions::default()).await;
    let cfg = format!(
        "host=127.0.0.1 port={} user=alice password={PASSWORD} dbname=app options='-c role=postgres'",
        p.port
    );
    let e = tokio_postgres::connect(&cfg, tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "0A000");
    let mut raw = Raw::connect(p.port).await;
    raw.startup(&[("user", "alice"), ("client_encoding", "SJIS")])
        .await;
    assert_eq!(raw.until_closed().await, vec!["0A000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_packets() {
    let p = Proxy::start(ProxyOptions::default()).await;
    let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        // Garbage that is not a length.
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), Some("08P01")),
        // Protocol 2.0.
        (
            [&[0, 0, 0, 9][..], &[0, 2, 0, 0], b"\0"].concat(),
            Some("0A000"),
        ),
        // Length of 4 (< 8).
        (vec![0, 0, 0, 4], Some("08P01")),
        // Huge length.
        (vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0], Some("08P01")),
        // Parameters without the final terminator.
        (
            [&[0, 0, 0, 14][..], &[0, 3, 0, 0], b"user\0x"].concat(),
            Some("08P01"),
        ),
        // No user.
        (
            [&[0, 0, 0, 9][..], &[0, 3, 0, 0], b"\0"].concat(),
            Some("28000"),
        ),
    ];
    for (bytes, want) in cases {
        let mut raw = Raw::connect(p.port).await;
        raw.send_raw(&bytes).await;
        let codes = raw.until_closed().await;
        assert_eq!(codes.first().map(String::as_str), want, "{bytes:?}");
    }
    // Bytes smuggled after SSLRequest (CVE-2021-23214 shape).
    let tls = Proxy::start(ProxyOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    let mut raw = Raw::connect(tls.port).await;
    // One write, so both arrive before the handshake would start.
    let mut both = bytes::BytesMut::new();
    SslRequest::new().encode(&mut both).unwrap();
    query("").encode(&mut both).unwrap();
    raw.send_raw(&both).await;
    assert_eq!(raw.until_closed().await, vec!["08P01"]);
    // And the firewall still serves real clients.
    let c = p.connect("alice", "app").await;
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_messages_end_only_that_session() {
    let db = fresh_db("garbage");
    let p = Proxy::start(ProxyOptions::with_limits(|l| {
        l.max_message_bytes = 64 * 1024
    }))
    .await;
    let bystander = p.connect("alice", &db).await;
    let mut tx_holder = p.connect("alice", &db).await;
    let tx = tx_holder.transaction().await.unwrap();
    tx.batch_execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // An unknown message type mid-session.
    let mut raw = Raw::login(p.port, "alice", &db).await;
    raw.send_frame(b'@', b"garbage").await;
    assert_eq!(raw.until_closed().await, vec!["08P01"]);
    // A message over the configured limit.
    let mut raw = Raw::login(p.port, "alice", &db).await;
    raw.send(&query(&format!("SELECT '{}'", "x".repeat(100_000))))
        .await;
    assert_eq!(raw.until_closed().await, vec!["08P01"]);
    // A negative length.
    let mut raw = Raw::login(p.port, "alice", &db).await;
    raw.send_raw(&[b'Q', 0x80, 0, 0, 0]).await;
    assert_eq!(raw.until_closed().await, vec!["08P01"]);
    // A malformed Parse (no terminator).
    let mut raw = Raw::login(p.port, "alice", &db).await;
    raw.send_frame(b'P', b"\0SELECT 1").await;
    assert_eq!(raw.until_closed().await, vec!["08P01"]);
    // tokio-postgres sending an oversized statement gets a clear error.
    let victim = p.connect("alice", &db).await;
    let e = victim
        .simple_query(&format!("SELECT '{}'", "y".repeat(100_000)))
        .await
        .unwrap_err();
    assert!(
        e.as_db_error()
            .map(|d| d.code().code() == "08P01")
            .unwrap_or(true),
        "{e}"
    );

    let n: i64 = scalar(&bystander, "SELECT count(*) FROM kept").await;
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_hits_auth_timeout() {
    let p = Proxy::start(ProxyOptions::with_limits(|l| {
        l.auth_timeout = Duration::from_millis(500)
    }))
    .await;
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed by auth timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let c = p.connect("alice", "app").await;
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_is_disconnected() {
    let p = Proxy::start(ProxyOptions::with_limits(|l| {
        l.client_write_timeout = Duration::from_secs(1)
    }))
    .await;
    let mut raw = Raw::login(p.port, "alice", "app").await;
    // ~200 MB of output that the client never reads.
    raw.send(&query(
        "SELECT repeat('x', 1000) FROM generate_series(1, 200000)",
    ))
    .await;
    let registry = &p.running().shared.registry;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !registry.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(registry.len(), 0, "stalled session was not closed");
    let c = p.connect("alice", "app").await;
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_then_back() {
    use infraveil::sandbox::ClusterOptions;
    let mut own = tokio::task::block_in_place(|| private_cluster(ClusterOptions::default()));
    let p = Proxy::start(ProxyOptions {
        upstream_port: Some(own.port),
        ..Default::default()
    })
    .await;
    let c = p.connect("alice", "app").await;
    c.simple_query("SELECT 1").await.unwrap();

    tokio::task::block_in_place(|| own.stop());
    // The live session ends with an error, not a hang.
    assert!(c.simple_query("SELECT 1").await.is_err());
    let e = p.try_connect("alice", "app", PASSWORD).await.unwrap_err();
    assert_eq!(sqlstate(&e), "08001");
    assert!(e.as_db_error().unwrap().message().contains("upstream"));

    tokio::task::block_in_place(|| own.restart()).unwrap();
    let c = p.connect("alice", "app").await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM orders").await;
    assert_eq!(n, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_then_closes() {
    let p = Proxy::start(ProxyOptions::with_limits(|l| {
        l.shutdown_grace = Duration::from_millis(800)
    }))
    .await;
    let port = p.port;
    let c = p.connect("alice", "app").await;
    let started = std::time::Instant::now();
    let running = {
        let mut p = p;
        p.running.take().unwrap()
    };
    let stop = tokio::spawn(running.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // During the grace period the live session still works ...
    c.simple_query("SELECT 1").await.unwrap();
    // ... but new connections are refused.
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    stop.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(c.simple_query("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_and_ssl_requests_are_declined_without_tls() {
    let p = Proxy::start(ProxyOptions::default()).await;
    let mut raw = Raw::connect(p.port).await;
    // GSSENCRequest, then SSLRequest (no TLS configured): both answered 'N',
    // and the connection goes on to a normal startup.
    let mut b = [0u8; 1];
    raw.send(&GssEncRequest::new()).await;
    raw.reader.get_mut().read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"N");
    raw.send(&SslRequest::new()).await;
    raw.reader.get_mut().read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"N");
    raw.startup(&[("user", "alice"), ("database", "app")]).await;
    // AuthenticationSASL offering SCRAM-SHA-256 only.
    let f = raw.next().await;
    assert_eq!(f.tag(), b'R');
    assert_eq!(&f.body()[..4], &10i32.to_be_bytes());
    assert!(f.body().windows(13).any(|w| w == b"SCRAM-SHA-256"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_credentials_sessions_spares_the_others() {
    use infraveil::protocol::PgError;
    let p = Proxy::start(ProxyOptions::default()).await;
    let mut alice = Raw::login(p.port, "alice", "app").await;
    let rita = p.connect("rita", "app").await;
    // What grant expiry and revocation use to end live sessions.
    let err = PgError::grant_revoked("g1", "tester");
    let told = p
        .running()
        .shared
        .registry
        .terminate_credential("dev:alice", &err);
    assert_eq!(told, 1);
    assert_eq!(alice.until_closed().await, vec!["57P01"]);
    assert_eq!(
        scalar::<i64>(&rita, "SELECT count(*) FROM customers").await,
        50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_do_not_reveal_upstream_details() {
    let p = Proxy::start(ProxyOptions::default()).await;
    // A missing database is the client's mistake: said as PostgreSQL says it.
    let e = p
        .try_connect("alice", "no_such_db", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "3D000");
    assert!(e.as_db_error().unwrap().message().contains("no_such_db"));
    // An upstream that is not there: the kind of failure, not its address.
    let down = Proxy::start(ProxyOptions {
        upstream_port: Some(infraveil::sandbox::free_port().unwrap()),
        ..Default::default()
    })
    .await;
    let e = down
        .try_connect("alice", "app", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "08001");
    let db = e.as_db_error().unwrap();
    let detail = db.detail().unwrap_or_default();
    assert!(detail.contains("unreachable"), "{detail}");
    assert!(
        !detail.contains("127.0.0.1") && !detail.contains("app_owner"),
        "{detail}"
    );
}

/// A start-up `search_path` changes which table an unqualified name means,
/// as `SET search_path` does: only the default path is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_search_path_is_judged_like_set() {
    let p = Proxy::start(ProxyOptions::default()).await;
    for bad in [
        "billing",
        "billing, public",
        "public, pg_catalog",
        "\"Public\"",
    ] {
        let mut raw = Raw::connect(p.port).await;
        raw.startup(&[("user", "alice"), ("database", "app"), ("search_path", bad)])
            .await;
        assert_eq!(raw.until_closed().await, vec!["0A000"], "{bad}");
    }
    for good in [
        "\"$user\", public",
        "public",
        "pg_catalog, \"$user\", public",
    ] {
        let mut raw = Raw::connect(p.port).await;
        raw.startup(&[
            ("user", "alice"),
            ("database", "app"),
            ("search_path", good),
        ])
        .await;
        assert_eq!(
            raw.next().await.tag(),
            b'R',
            "{good}: asked to authenticate"
        );
    }
    p.shutdown().await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Before login a client may send only small messages, and only so many
/// clients may be logging in at once: many slow and oversized
/// unauthenticated connections cannot grow the daemon's memory, and a
/// logged-in session keeps working throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_clients_are_bounded_in_size_and_number() {
    let p = Proxy::start(ProxyOptions::with_limits(|l| l.max_authenticating = 8)).await;
    let mut c = Raw::login(p.port, "alice", "app").await;
    let before = rss_kib();

    // Oversized: a password message claiming 60 MiB is refused at its header.
    let mut big = Vec::new();
    for _ in 0..32 {
        let mut raw = Raw::connect(p.port).await;
        raw.startup(&[("user", "alice"), ("database", "app")]).await;
        assert_eq!(raw.next().await.tag(), b'R');
        let mut header = vec![b'p'];
        header.extend_from_slice(&(60i32 << 20).to_be_bytes());
        raw.send_raw(&header).await;
        raw.send_raw(&vec![b'x'; 64 << 10]).await;
        big.push(raw);
    }
    for mut raw in big {
        assert_eq!(
            raw.until_closed().await.first().map(String::as_str),
            Some("08P01")
        );
    }

    // Slow: clients that send half a start-up packet and wait hold a login
    // slot until the auth timeout; past the limit they are turned away.
    let mut slow = Vec::new();
    let mut turned_away = 0;
    for _ in 0..24 {
        let mut raw = Raw::connect(p.port).await;
        raw.send_raw(&[0, 0, 0, 40, 0, 3]).await;
        slow.push(raw);
    }
    for raw in &mut slow {
        if let Ok(codes) =
            tokio::time::timeout(Duration::from_millis(300), raw.until_closed()).await
            && codes.first().map(String::as_str) == Some("53300")
        {
            turned_away += 1;
        }
    }
    assert!(turned_away >= 16, "only {turned_away} of 24 turned away");

    // The logged-in session never noticed.
    let (_, codes, _) = c.pipeline(&["SELECT 1"]).await;
    assert!(codes.is_empty());
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "the daemon grew by {grown} KiB");
    drop(slow);
    p.shutdown().await;
}
