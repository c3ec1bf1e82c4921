//! The store behaviour suite against the in-memory store, on paused time.

mod suite;

use std::time::Duration;

use palisade_idempotency::MemoryStore;
use suite::Fixture;

fn fixture() -> Fixture<MemoryStore> {
    Fixture {
        store: MemoryStore::new(),
        lock_expiry: Duration::from_secs(60),
    }
}

macro_rules! memory_suite {
    ($($test:ident),* $(,)?) => {
        $(
            #[tokio::test(start_paused = true)]
            async fn $test() {
                suite::$test(fixture()).await;
            }
        )*
    };
}

suite::all_tests!(memory_suite);
