//! Reloading policies (SIGHUP): logins read the roles from the same copy
//! the inspector judges by, so one reload changes both. A login after a
//! reload uses the reloaded role (its upstream user), and a failed reload
//! keeps the last good set.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_after_reload_uses_the_reloaded_role() {
    let db = fresh_db("policy_reload");
    let dir =
        std::env::temp_dir().join(format!("infraveil-reload-policies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for f in ["roles.toml", "identities.toml"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let p = Proxy::start(ProxyOptions {
        policies_dir: Some(dir.clone()),
        ..ProxyOptions::enforcing()
    })
    .await;
    let before = p.connect("oncall", &db).await;
    assert_eq!(
        scalar::<String>(&before, "SELECT current_user::text").await,
        "app_read"
    );

    // readonly now reaches PostgreSQL as app_write.
    let roles = std::fs::read_to_string(dir.join("roles.toml")).unwrap();
    let changed = roles.replacen(
        "[roles.readonly]\nupstream_user = \"app_read\"",
        "[roles.readonly]\nupstream_user = \"app_write\"",
        1,
    );
    assert_ne!(roles, changed, "the fixture's readonly role moved");
    std::fs::write(dir.join("roles.toml"), &changed).unwrap();
    p.running().reload_policies().unwrap();
    // The policies the firewall reports are the inspector's new ones.
    assert_eq!(
        p.running()
            .shared
            .policies()
            .role("readonly")
            .unwrap()
            .upstream_user,
        "app_write"
    );
    let after = p.connect("oncall", &db).await;
    assert_eq!(
        scalar::<String>(&after, "SELECT current_user::text").await,
        "app_write"
    );

    // A broken reload changes nothing: logins keep the last good set.
    std::fs::write(dir.join("roles.toml"), changed.replace("allow", "alow")).unwrap();
    assert!(p.running().reload_policies().is_err());
    let again = p.connect("oncall", &db).await;
    assert_eq!(
        scalar::<String>(&again, "SELECT current_user::text").await,
        "app_write"
    );
    p.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
