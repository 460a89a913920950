//! The classifier and policy engine on arbitrary input: no panic, no stack
//! overflow, and nothing the parser rejects may come out `read`.
#![no_main]

use std::sync::{Arc, OnceLock};

use infraveil::classify::{Class, classify};
use infraveil::policy::{Engine, PolicySet, Prepared};
use libfuzzer_sys::fuzz_target;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let set = PolicySet::load_dir(&dir).expect("example policies");
        Engine::uncached(Arc::new(set)).expect("compile policies")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let a = classify(sql);
    for s in &a.statements {
        if s.reason.starts_with("infraveil could not parse") {
            assert_ne!(s.class, Class::Read, "{sql:?}");
        }
    }
    let e = engine();
    let _ = e.judge("ops-agent", "agent", &a, &Prepared::default());
    let _ = e.judge("alice", "deployer", &a, &Prepared::default());
});
