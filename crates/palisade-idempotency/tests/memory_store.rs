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

memory_suite!(
    first_request_runs_and_repeats_replay_it,
    a_repeat_while_in_flight_gets_409,
    a_key_reused_with_another_request_gets_422,
    missing_and_invalid_keys,
    an_oversized_body_gets_413,
    server_errors_are_not_stored_and_may_be_retried,
    a_dropped_request_releases_its_key,
    an_expired_lock_is_taken_over_and_the_stale_owner_cannot_overwrite,
    store_failures_fail_closed_or_open,
    principals_never_see_each_others_responses,
    a_response_over_the_cap_passes_through_unstored,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_requests_run_once() {
    suite::two_hundred_concurrent_requests_run_once(fixture()).await;
}
