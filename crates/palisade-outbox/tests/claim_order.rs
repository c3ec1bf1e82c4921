//! Property: whatever the interleaving of staging, claims and outcomes, a claim hands out only
//! the oldest pending events of aggregates nobody else holds, so each aggregate is published
//! in staging order (dead letters aside) and no event is held twice.
#![cfg(feature = "sqlite")]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade_outbox::sqlite::{Lease, SqliteStore, migrate};
use palisade_outbox::{Disposition, Event, OutboxStore, stage};
use proptest::prelude::*;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

#[derive(Debug, Clone)]
enum Op {
    Stage(u8),
    Claim(usize),
    /// Completes the open claim at this index (modulo), with these outcome choices.
    Complete(usize, Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3).prop_map(Op::Stage),
        2 => (1usize..5).prop_map(Op::Claim),
        2 => (any::<usize>(), prop::collection::vec(0u8..4, 8)).prop_map(|(i, o)| Op::Complete(i, o)),
    ]
}

/// Per aggregate, staged event ids in order, and what became of them.
#[derive(Default)]
struct Model {
    staged: HashMap<String, Vec<uuid::Uuid>>,
    done: HashSet<uuid::Uuid>,
    held: HashSet<uuid::Uuid>,
    published: HashMap<String, Vec<uuid::Uuid>>,
}

impl Model {
    /// The aggregate's events neither published nor dead-lettered, oldest first.
    fn pending(&self, aggregate: &str) -> Vec<uuid::Uuid> {
        self.staged
            .get(aggregate)
            .into_iter()
            .flatten()
            .filter(|id| !self.done.contains(id))
            .copied()
            .collect()
    }
}

async fn run(ops: Vec<Op>) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "palisade-outbox-prop-{}-{}.db",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    migrate(&pool).await.unwrap();
    let store = SqliteStore::new(pool.clone());
    let mut model = Model::default();
    let mut open: Vec<(Lease, Vec<(i64, Event)>)> = Vec::new();
    for op in ops {
        match op {
            Op::Stage(a) => {
                let aggregate = format!("agg-{a}");
                let event = Event::new("E", "Agg", aggregate.clone(), json!(null));
                let mut tx = pool.begin().await.unwrap();
                stage(&mut tx, &event).await.unwrap();
                tx.commit().await.unwrap();
                model.staged.entry(aggregate).or_default().push(event.event_id);
            }
            Op::Claim(limit) => {
                let (lease, claimed, _) = store.claim(limit, Duration::from_secs(600)).await.unwrap();
                assert!(claimed.len() <= limit);
                let mut per_aggregate: HashMap<&str, Vec<uuid::Uuid>> = HashMap::new();
                for c in &claimed {
                    assert!(model.held.insert(c.event.event_id), "event held by two claims");
                    per_aggregate
                        .entry(&c.event.aggregate_id)
                        .or_default()
                        .push(c.event.event_id);
                }
                for (aggregate, ids) in per_aggregate {
                    let pending = model.pending(aggregate);
                    assert_eq!(
                        ids,
                        pending[..ids.len()],
                        "a claim takes the oldest pending events of {aggregate}"
                    );
                }
                open.push((lease, claimed.into_iter().map(|c| (c.seq, c.event)).collect()));
            }
            Op::Complete(index, choices) => {
                if open.is_empty() {
                    continue;
                }
                let (lease, events) = open.remove(index % open.len());
                let mut failed: HashSet<String> = HashSet::new();
                let mut outcomes = Vec::new();
                for (i, (seq, event)) in events.iter().enumerate() {
                    model.held.remove(&event.event_id);
                    // As the relay does: after a failure the aggregate's later events are released.
                    let disposition = if failed.contains(&event.aggregate_id) {
                        Disposition::Released
                    } else {
                        match choices[i % choices.len()] {
                            0 | 1 => Disposition::Published,
                            2 => Disposition::Retry {
                                delay: Duration::ZERO,
                                error: "down".into(),
                            },
                            _ => Disposition::DeadLetter { error: "poison".into() },
                        }
                    };
                    match &disposition {
                        Disposition::Published => {
                            model.done.insert(event.event_id);
                            model
                                .published
                                .entry(event.aggregate_id.clone())
                                .or_default()
                                .push(event.event_id);
                        }
                        Disposition::DeadLetter { .. } => {
                            model.done.insert(event.event_id);
                            failed.insert(event.aggregate_id.clone());
                        }
                        Disposition::Retry { .. } => {
                            failed.insert(event.aggregate_id.clone());
                        }
                        Disposition::Released => {}
                    }
                    outcomes.push((*seq, disposition));
                }
                store.complete(lease, &outcomes, false).await.unwrap();
            }
        }
    }
    for (aggregate, published) in &model.published {
        let order: Vec<usize> = published
            .iter()
            .map(|id| model.staged[aggregate].iter().position(|s| s == id).unwrap())
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{aggregate} published out of order: {order:?}"
        );
    }
    pool.close().await;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

proptest! {
    // 64 cases of up to 40 operations: each case builds a database file, so keep it modest.
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn claims_keep_aggregate_order(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
