//! The example configs in the repository (infraveil.example.toml and the
//! compose setup's docker/infraveil.toml) parse and validate.

#[test]
fn example_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("infraveil.example.toml");
    let c = infraveil::config::Config::load(&path).unwrap();
    assert_eq!(c.upstream.port, 5432);
    assert!(c.admin.listen.is_some());
}

/// The compose setup's config, which no CI here can run in Docker, at
/// least loads: approval links point at the host-published admin port.
#[test]
fn docker_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/infraveil.toml");
    let c = infraveil::config::Config::load(&path).unwrap();
    assert_eq!(
        c.approvals.public_url.as_deref(),
        Some("http://127.0.0.1:6433")
    );
    assert_eq!(c.admin.listen, Some("0.0.0.0:6433".parse().unwrap()));
    assert!(!c.tls_required(), "no certificate in the compose setup");
}
