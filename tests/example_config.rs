//! The example config in the repository parses and validates.

#[test]
fn example_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("infraveil.example.toml");
    let c = infraveil::config::Config::load(&path).unwrap();
    assert_eq!(c.upstream.port, 5432);
    assert!(c.admin.listen.is_some());
}
