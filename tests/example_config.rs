//! The example configs in the repository (infraveil.example.toml and the
//! compose setups' docker/infraveil.toml and docker/infraveil-ha.toml)
//! parse and validate.

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

/// The two-firewall compose setup's config: state in the control database,
/// each instance named by its host name.
#[test]
fn docker_ha_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/infraveil-ha.toml");
    let c = infraveil::config::Config::load(&path).unwrap();
    assert_eq!(c.state.backend, infraveil::config::StateBackend::Postgres);
    assert!(c.state.url.is_some());
    assert!(c.state.instance.is_none(), "named by the host name");
}
