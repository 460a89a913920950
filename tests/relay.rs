//! Protocol fidelity through the firewall, against real PostgreSQL: simple
//! and extended query, binary formats, portals with row limits, pipelining
//! with an error in the middle, COPY both ways, LISTEN/NOTIFY, notices,
//! cancel (tokio-postgres and psql Ctrl-C), TLS (tokio-postgres and psql
//! verify-full), `[tls] require` and cancel requests beside it.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt, TryStreamExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_query() {
    let db = fresh_db("simple");
    let proxy = Proxy::start(ProxyOptions::default()).await;
    let c = proxy.connect("alice", &db).await;
    c.batch_execute("CREATE TABLE t (id int primary key, v text, b bytea); INSERT INTO t VALUES (1, 'one', '\\x00ff')")
        .await
        .unwrap();
    // Simple protocol, multiple statements.
    let rows = c
        .simple_query("SELECT v FROM t; SELECT 2 AS two")
        .await
        .unwrap();
    let data_rows = rows
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(data_rows, 2);
    // Extended protocol with parameters and binary results.
    let stmt = c
        .prepare("SELECT id, v, b FROM t WHERE id = $1")
        .await
        .unwrap();
    let row = c.query_one(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, &str>(1), "one");
    assert_eq!(row.get::<_, Vec<u8>>(2), vec![0u8, 255]);
    // Statements reused many times.
    for i in 2..50i32 {
        c.execute(
            "INSERT INTO t (id, v) VALUES ($1, $2)",
            &[&i, &format!("v{i}")],
        )
        .await
        .unwrap();
    }
    let n: i64 = scalar(&c, "SELECT count(*) FROM t").await;
    assert_eq!(n, 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portals_with_row_limits_and_transactions() {
    let db = fresh_db("portal");
    let proxy = Proxy::start(ProxyOptions::default()).await;
    let mut c = proxy.connect("alice", &db).await;
    let tx = c.transaction().await.unwrap();
    let stmt = tx
        .prepare("SELECT g FROM generate_series(1, 10) g")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let mut seen = vec![];
    loop {
        let rows = tx.query_portal(&portal, 3).await.unwrap();
        if rows.is_empty() {
            break;
        }
        seen.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_with_an_error_in_the_middle() {
    let db = fresh_db("pipeline");
    let proxy = Proxy::start(ProxyOptions::default()).await;
    let c = proxy.connect("alice", &db).await;
    // tokio-postgres pipelines concurrent queries on one connection.
    let a = c.query_one("SELECT 1::int", &[]);
    let b = c.query_one("SELECT 1/0", &[]);
    let d = c.query_one("SELECT 3::int", &[]);
    let (a, b, d) = tokio::join!(a, b, d);
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(sqlstate(&b.unwrap_err()), "22012");
    assert_eq!(d.unwrap().get::<_, i32>(0), 3);
    // The session is fine afterwards.
    let r = c.query_one("SELECT 'ok'::text", &[]).await.unwrap();
    assert_eq!(r.get::<_, &str>(0), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_pipeline_error_recovery_is_exact() {
    let db = fresh_db("rawpipe");
    let proxy = Proxy::start(ProxyOptions::default()).await;
    let mut raw = Raw::login(proxy.port, "alice", &db).await;
    raw.send(&query("CREATE TABLE t (id int)")).await;
    raw.until_ready().await;
    // Parse/Bind/Execute ×3 in one batch; the second fails; one Sync.
    let (tags, codes, status) = raw
        .pipeline(&[
            "INSERT INTO t VALUES (1)",
            "SELECT 1/0",
            "INSERT INTO t VALUES (2)",
        ])
        .await;
    // 1/0 is folded at Bind (planning), so the error replaces BindComplete.
    assert_eq!(
        tags,
        b"12C1EZ".to_vec(),
        "{:?}",
        String::from_utf8_lossy(&tags)
    );
    assert_eq!(codes, vec!["22012"]);
    assert_eq!(status, b'I');
    // The implicit transaction was rolled back as a whole.
    raw.send(&query("SELECT count(*) FROM t")).await;
    let (tags, _, _) = raw.until_ready().await;
    assert_eq!(tags, b"TDCZ".to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let db = fresh_db("copy");
    let proxy = Proxy::start(ProxyOptions::default()).await;
    let c = proxy.connect("alice", &db).await;
    c.batch_execute("CREATE TABLE t (id int, v text)")
        .await
        .unwrap();
    let sink = c.copy_in("COPY t FROM STDIN").await.unwrap();
    let mut sink = Box::pin(sink);
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!("{i}\tvalue {i}\n"));
    }
    sink.send(bytes::Bytes::from(data.clone())).await.unwrap();
    let n = sink.as_mut().finish().await.unwrap();
    assert_eq!(n, 5000);
    let stream = c.copy_out("COPY t TO STDOUT").await.unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_fail_and_copy_errors_leave_the_session_usable() {
    let db = fresh_db("copyfail");
    let proxy = Proxy::start(ProxyOptions::default()).await;
    let mut raw = Raw::login(proxy.port, "alice", &db).await;
    raw.send(&query("CREATE TABLE t (id int)")).await;
    raw.until_ready().await;
    raw.send(&query("COPY t FROM STDIN")).await;
    assert_eq!(raw.next().await.tag(), b'G');
    raw.send(&copy_data("1\n2\n")).await;
    raw.send(&copy_fail("client gave up")).await;
    let (_, codes, status) = raw.until_ready().await;
    assert_eq!(codes, vec!["57014"]);
    assert_eq!(status, b'I');
    // Bad data mid-COPY: PostgreSQL's error comes through, session goes on.
    raw.send(&query("COPY t FROM STDIN")).await;
    assert_eq!(raw.next().await.tag(), b'G');
    raw.send(&copy_data("not a number\n")).await;
    raw.send(&copy_done()).await;
    let (_, codes, _) = raw.until_ready().await;
    assert_eq!(codes, vec!["22P02"]);
    raw.send(&query("SELECT count(*) FROM t")).await;
    let (tags, codes, _) = raw.until_ready().await;
    assert_eq!((tags, codes), (b"TDCZ".to_vec(), vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_and_queries() {
    let db = fresh_db("psqlcopy");
    let proxy = Proxy::start(ProxyOptions::default()).await;
    let url = proxy.url("alice", &db);
    let csv = proxy.dir.join("in.csv");
    std::fs::write(&csv, "1,a\n2,b\n3,c\n").unwrap();
    let (ok, _, err) = psql(&url, &["-c", "CREATE TABLE t (id int, v text)"]).await;
    assert!(ok, "{err}");
    let copy = format!("\\copy t FROM '{}' CSV", csv.display());
    let (ok, _, err) = psql(&url, &["-c", &copy]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = psql(&url, &["-c", "SELECT string_agg(v, '' ORDER BY id) FROM t"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "abc");
    let (ok, out, _) = psql(&url, &["-c", "\\copy t TO STDOUT"]).await;
    assert!(ok);
    assert_eq!(out, "1\ta\n2\tb\n3\tc\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_and_notices() {
    let db = fresh_db("notify");
    let proxy = Proxy::start(ProxyOptions::default()).await;
    let cfg = proxy.conn_str("alice", &db);
    let (listener, mut conn) = tokio_postgres::connect(&cfg, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            let _ = tx.send(m);
        }
    });
    listener.batch_execute("LISTEN chan").await.unwrap();
    let sender = proxy.connect("alice", &db).await;
    sender.batch_execute("NOTIFY chan, 'hello'").await.unwrap();
    listener
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'careful'; END $$")
        .await
        .unwrap();
    let mut got_notify = false;
    let mut got_notice = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !(got_notify && got_notice) && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(tokio_postgres::AsyncMessage::Notification(n))) => {
                assert_eq!(n.channel(), "chan");
                assert_eq!(n.payload(), "hello");
                got_notify = true;
            }
            Ok(Some(tokio_postgres::AsyncMessage::Notice(n))) => {
                assert_eq!(n.message(), "careful");
                got_notice = true;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    assert!(
        got_notify && got_notice,
        "notify {got_notify} notice {got_notice}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_tokio_postgres() {
    let db = fresh_db("cancel");
    let proxy = Proxy::start(ProxyOptions::default()).await;
    let c = proxy.connect("alice", &db).await;
    let token = c.cancel_token();
    let started = std::time::Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let e = c.batch_execute("SELECT pg_sleep(30)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57014");
    assert!(started.elapsed() < Duration::from_secs(20));
    canceller.await.unwrap();
    assert_eq!(scalar::<i32>(&c, "SELECT 1::int").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_ctrl_c_cancels() {
    let db = fresh_db("psqlcancel");
    let proxy = Proxy::start(ProxyOptions::default()).await;
    let child = tokio::process::Command::new("psql")
        .arg(proxy.url("alice", &db))
        .args(["-X", "-c", "SELECT pg_sleep(30)"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("psql ended after Ctrl-C")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_wrong_key_is_ignored() {
    let db = fresh_db("badcancel");
    let proxy = Proxy::start(ProxyOptions::default()).await;
    let c = proxy.connect("alice", &db).await;
    // A cancel request for a made-up pid/key: no answer, nothing cancelled.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(&[0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2])
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    let r = c
        .query_one("SELECT pg_sleep(0.5)::text", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, &str>(0), "");
}

fn tls_connector(cert: &std::path::Path) -> tokio_postgres_rustls::MakeRustlsConnect {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_tokio_postgres_and_psql() {
    let db = fresh_db("tls");
    let proxy = Proxy::start(ProxyOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    let cert = proxy.cert_path.clone().unwrap();
    let cfg = format!(
        "host=localhost port={} user=alice password={PASSWORD} dbname={db} sslmode=require",
        proxy.port
    );
    let (c, conn) = tokio_postgres::connect(&cfg, tls_connector(&cert))
        .await
        .unwrap();
    tokio::spawn(conn);
    let r = c.query_one("SELECT 40 + 2", &[]).await.unwrap();
    assert_eq!(r.get::<_, i32>(0), 42);

    let url = format!(
        "postgres://alice:{PASSWORD}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        proxy.port,
        cert.display()
    );
    let (ok, out, err) = psql(&url, &["-c", "SELECT 'secure'"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "secure");
    // sslmode=require with a plain-only firewall fails clearly.
    let plain = Proxy::start(ProxyOptions::default()).await;
    let url = format!(
        "postgres://alice:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=require",
        plain.port
    );
    let (ok, _, err) = psql(&url, &["-c", "SELECT 1"]).await;
    assert!(!ok);
    assert!(err.contains("SSL"), "{err}");
}

/// `[tls] require` (the default with a certificate): a client that does not
/// negotiate TLS gets `FATAL 28000` in plain text before authentication;
/// TLS clients work, and so do their cancel requests, which psql (libpq
/// before PostgreSQL 17) sends unencrypted on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_plaintext_but_not_cancel_requests() {
    let db = fresh_db("tlsreq");
    let proxy = Proxy::start(ProxyOptions {
        tls: true,
        admin: true,
        ..Default::default()
    })
    .await;
    let cert = proxy.cert_path.clone().unwrap();

    // The refusal comes first, before any authentication request.
    let mut raw = Raw::connect(proxy.port).await;
    raw.startup(&[("user", "alice"), ("database", &db)]).await;
    let f = raw.next().await;
    assert_eq!(f.tag(), b'E', "{:?}", f.bytes);
    let fields = infraveil::protocol::ErrorFields::decode(&f.bytes).unwrap();
    assert_eq!(fields.code(), Some("28000"));
    assert_eq!(
        fields.message(),
        Some("connection requires TLS (sslmode=require or stronger)")
    );
    assert!(String::from_utf8_lossy(&f.bytes).contains("FATAL"));
    assert_eq!(raw.until_closed().await, Vec::<String>::new());

    // tokio-postgres without TLS, and psql with sslmode=disable.
    let e = proxy.try_connect("alice", &db, PASSWORD).await.unwrap_err();
    assert_eq!(sqlstate(&e), "28000", "{e}");
    let plain = format!(
        "postgres://alice:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
        proxy.port
    );
    let (ok, _, err) = psql(&plain, &["-c", "SELECT 1"]).await;
    assert!(!ok);
    assert!(err.contains("connection requires TLS"), "{err}");
    // sslmode=prefer (libpq's default) and allow end up on TLS.
    for mode in ["prefer", "allow", "require"] {
        let url = format!(
            "postgres://alice:{PASSWORD}@127.0.0.1:{}/{db}?sslmode={mode}",
            proxy.port
        );
        let (ok, out, err) = psql(&url, &["-c", "SELECT 'in'"]).await;
        assert!(ok, "sslmode={mode}: {err}");
        assert_eq!(out.trim(), "in", "sslmode={mode}");
    }

    // Cancel over TLS (tokio-postgres negotiates TLS for it too).
    let cfg = format!(
        "host=localhost port={} user=alice password={PASSWORD} dbname={db} sslmode=require",
        proxy.port
    );
    let (c, conn) = tokio_postgres::connect(&cfg, tls_connector(&cert))
        .await
        .unwrap();
    tokio::spawn(conn);
    let token = c.cancel_token();
    let connector = tls_connector(&cert);
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(connector).await.unwrap();
    });
    let e = c.batch_execute("SELECT pg_sleep(30)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57014");
    canceller.await.unwrap();
    assert_eq!(scalar::<i32>(&c, "SELECT 1::int").await, 1);

    // psql's Ctrl-C: the session is TLS, the cancel request is not.
    let url = format!(
        "postgres://alice:{PASSWORD}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        proxy.port,
        cert.display()
    );
    let child = tokio::process::Command::new("psql")
        .arg(&url)
        .args(["-X", "-c", "SELECT pg_sleep(30)"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("psql ended after Ctrl-C")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );

    // The refused attempts are in the audit log, with why.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = proxy
        .audit_payloads(&[])
        .await
        .into_iter()
        .filter(|p| {
            p["type"] == "connection.closed"
                && p["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("requires TLS"))
        })
        .count();
    assert!(refused >= 3, "{refused} refusals recorded");
}

/// `require = false` with a certificate offers TLS and still admits plain
/// clients (for a migration period, say).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_optional_still_allows_plaintext() {
    let db = fresh_db("tlsopt");
    let proxy = Proxy::start(ProxyOptions {
        tls: true,
        tls_require: Some(false),
        ..Default::default()
    })
    .await;
    let c = proxy.connect("alice", &db).await;
    assert_eq!(scalar::<i32>(&c, "SELECT 7::int").await, 7);
    let url = format!(
        "postgres://alice:{PASSWORD}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
        proxy.port,
        proxy.cert_path.as_ref().unwrap().display()
    );
    let (ok, out, err) = psql(&url, &["-c", "SELECT 'secure'"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "secure");
}

/// A cancel request sent inside TLS (libpq 17's `PQcancelCreate`, psycopg's
/// `cancel_safe`) is answered by a clean TLS close: the client waits for
/// that close, and a bare TCP close is "unexpected eof" to OpenSSL, which
/// then reports the cancel as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_over_tls_ends_with_close_notify() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = Proxy::start(ProxyOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])
        .await
        .unwrap(); // SSLRequest
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let mut roots = rustls::RootCertStore::empty();
    for c in
        rustls::pki_types::pem::PemObject::pem_file_iter(proxy.cert_path.as_ref().unwrap()).unwrap()
    {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    // CancelRequest for a session that does not exist: answered the same way.
    let mut cancel = vec![0, 0, 0, 16, 4, 0xd2, 0x16, 0x2e];
    cancel.extend_from_slice(&[0, 0, 0x30, 0x39, 0, 0, 0x10, 0x92]);
    tls.write_all(&cancel).await.unwrap();
    let mut rest = vec![];
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest))
        .await
        .expect("the firewall closes the connection");
    assert!(
        matches!(read, Ok(0)),
        "want a clean TLS close, got {read:?}"
    );
}
