#![no_main]

//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::sync::LazyLock;

use palisade_fuzz::StoredResponseTarget;

static TARGET: LazyLock<StoredResponseTarget> = LazyLock::new(|| {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("palisade_fuzz_{}:", std::process::id());
    StoredResponseTarget::connect(&url, &prefix).unwrap_or_else(|err| {
        eprintln!("the stored_response target needs Redis at {url}: {err}");
        std::process::exit(2)
    })
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    palisade_fuzz::stored_response(&TARGET, data);
});
