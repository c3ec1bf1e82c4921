//! Model checks of the retry budget under concurrent deposits, withdrawals
//! and refunds: no deposit or withdrawal is lost whatever the interleaving.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p palisade-retry --test loom --release`.
#![cfg(loom)]

use std::time::Duration;

use loom::thread;
use palisade_retry::RetryBudget;

fn budget(min_per_sec: u32) -> RetryBudget {
    RetryBudget::builder()
        .ratio(1.0)
        .min_per_sec(min_per_sec)
        .window(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[test]
fn a_deposit_racing_a_withdrawal_is_never_lost() {
    loom::model(|| {
        let b = budget(0);
        let depositor = {
            let b = b.clone();
            thread::spawn(move || b.deposit())
        };
        let withdrew = b.withdraw();
        depositor.join().unwrap();
        // Either the withdrawal saw the deposit and spent it, or it is still there.
        assert_eq!(b.available() + u64::from(withdrew), 1);
    });
}

#[test]
fn a_batch_that_places_deposits_races_a_withdrawal() {
    loom::model(|| {
        let b = budget(0);
        b.deposit_many(63);
        let depositor = {
            let b = b.clone();
            // Crosses the 64th deposit: places the pending deposits under try_lock.
            thread::spawn(move || b.deposit_many(2))
        };
        let withdrew = b.withdraw();
        depositor.join().unwrap();
        assert_eq!(b.available() + u64::from(withdrew), 65);
    });
}

#[test]
fn two_withdrawals_never_spend_the_same_retry() {
    loom::model(|| {
        let b = budget(1);
        let other = {
            let b = b.clone();
            thread::spawn(move || b.withdraw())
        };
        let mine = b.withdraw();
        let theirs = other.join().unwrap();
        assert!(mine && theirs, "the floor holds 60 retries");
        assert_eq!(b.available(), 58);
    });
}
