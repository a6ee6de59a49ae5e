//! The `serve` config parser (the binary's own module, included as it is): no panic on any
//! input, and an accepted config holds only absolute, distinct mountpoints.
#![no_main]

#[path = "../../src/config.rs"]
#[allow(dead_code)]
mod config;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = config::parse_config(text, "fuzz.toml") {
        assert!(!c.mounts.is_empty() || c.credentials.is_some());
        let mut seen = std::collections::HashSet::new();
        for m in &c.mounts {
            assert!(m.mountpoint.is_absolute());
            assert!(seen.insert(&m.mountpoint));
        }
    }
});
