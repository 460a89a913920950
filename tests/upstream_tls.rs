//! TLS from the firewall to PostgreSQL, with the upstream certificate
//! verified against a configured CA.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use infraveil::config::UpstreamTlsMode;
use infraveil::sandbox::ClusterOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_to_upstream() {
    let own = tokio::task::block_in_place(|| {
        private_cluster(ClusterOptions {
            // Only TLS connections are accepted over TCP.
            hba_prefix: vec!["hostnossl all all 0.0.0.0/0 reject".into()],
            ..Default::default()
        })
    });
    let (cert, key) = infraveil::net::tls::self_signed(&["localhost"]).unwrap();
    let data = own.dir.join("data");
    std::fs::write(data.join("server.crt"), &cert).unwrap();
    std::fs::write(data.join("server.key"), &key).unwrap();
    std::fs::set_permissions(
        data.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    own.chown_to_server_user(&data.join("server.crt")).unwrap();
    own.chown_to_server_user(&data.join("server.key")).unwrap();
    own.psql(
        "postgres",
        "ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf();",
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let scratch = std::env::temp_dir().join(format!("veil-ca-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("ca.pem"), &cert).unwrap();
    let p = Proxy::start(ProxyOptions {
        upstream_port: Some(own.port),
        upstream_tls: Some((UpstreamTlsMode::VerifyFull, Some(scratch.join("ca.pem")))),
        ..Default::default()
    })
    .await;
    let c = p.connect("alice", "app").await;
    let ssl: bool = scalar(
        &c,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert!(ssl, "upstream connection must be encrypted");

    // A CA that did not sign the server's certificate: refused, clearly.
    let (other, _) = infraveil::net::tls::self_signed(&["localhost"]).unwrap();
    std::fs::write(scratch.join("other.pem"), other).unwrap();
    let p2 = Proxy::start(ProxyOptions {
        upstream_port: Some(own.port),
        upstream_tls: Some((UpstreamTlsMode::VerifyFull, Some(scratch.join("other.pem")))),
        ..Default::default()
    })
    .await;
    let e = p2.try_connect("alice", "app", PASSWORD).await.unwrap_err();
    assert_eq!(sqlstate(&e), "08001");
    let detail = e.as_db_error().unwrap().detail().unwrap_or("").to_owned();
    assert!(detail.contains("TLS"), "{detail}");
    let _ = std::fs::remove_dir_all(scratch);
}
