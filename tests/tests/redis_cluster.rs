//! The Redis stores over a Redis Cluster: the webhook replay store's claims,
//! acceptances and releases across keys that land on every node. (The
//! idempotency store's whole suite runs over the cluster in
//! `idempotency_stores.rs`.) Each store operation touches one key, so it
//! lives in one hash slot and the cluster connection routes it to the node
//! that owns that slot, `EVALSHA` and the script's `SCRIPT LOAD` included.
//!
//! The cluster: `REDIS_CLUSTER_URLS` (default the three nodes `.ci/redis-cluster`
//! starts on 127.0.0.1:7000-7002).

use std::collections::BTreeSet;
use std::time::Duration;

use palisade_tests::RedisCluster;
use palisade_webhook::{Claim, Lease, RedisReplayStore, ReplayStore};
use redis::Value;

/// The port of the node owning each slot range.
async fn slot_owners(cluster: &RedisCluster) -> Vec<(i64, i64, i64)> {
    let mut conn = cluster.conn.clone();
    let slots: Vec<Vec<Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await.unwrap();
    slots
        .into_iter()
        .map(|range| {
            let int = |v: &Value| match v {
                Value::Int(n) => *n,
                other => panic!("not an integer: {other:?}"),
            };
            let Value::Array(node) = &range[2] else {
                panic!("no node in {range:?}")
            };
            (int(&range[0]), int(&range[1]), int(&node[1]))
        })
        .collect()
}

#[tokio::test]
async fn webhook_replay_store_claims_accepts_and_releases_on_every_node() {
    let Some(cluster) = RedisCluster::connect("webhook_cluster").await else {
        return;
    };
    let store = RedisReplayStore::new(cluster.conn.clone(), cluster.prefix.clone());
    let owners = slot_owners(&cluster).await;
    let mut nodes = BTreeSet::new();
    let mut conn = cluster.conn.clone();
    for i in 0..24 {
        let id = format!("stripe:evt_{i}");
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(cluster.key(&id))
            .query_async(&mut conn)
            .await
            .unwrap();
        let node = owners
            .iter()
            .find(|(from, to, _)| (*from..=*to).contains(&slot))
            .unwrap()
            .2;
        nodes.insert(node);

        let (first, second) = (Lease::new(2 * i + 1), Lease::new(2 * i + 2));
        let lock = Duration::from_secs(30);
        assert_eq!(store.claim(&id, first, lock).await.unwrap(), Claim::Acquired, "{id}");
        assert_eq!(store.claim(&id, second, lock).await.unwrap(), Claim::InFlight, "{id}");
        if i % 2 == 0 {
            store.accept(&id, Duration::from_secs(60)).await.unwrap();
            assert_eq!(store.claim(&id, second, lock).await.unwrap(), Claim::Accepted, "{id}");
        } else {
            // The holder's release frees the id for the next delivery.
            store.release(&id, first);
            let mut freed = false;
            for _ in 0..200 {
                if store.claim(&id, second, lock).await.unwrap() == Claim::Acquired {
                    freed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(freed, "{id}: released");
        }
    }
    assert!(
        nodes.len() >= 2,
        "the ids should spread over the nodes: {nodes:?} of {owners:?}"
    );
}
