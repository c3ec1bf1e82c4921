//! The Idempotency-Key layer's store suite against live Redis and Postgres:
//! the same test bodies the memory store runs in the crate's own tests
//! (`crates/palisade-idempotency/tests/suite`), each with a key prefix or
//! schema of its own. Locks are short (the servers expire them on their own
//! clocks), so these tests really wait for an expiry.

#[path = "../../crates/palisade-idempotency/tests/suite/mod.rs"]
mod suite;

use std::time::Duration;

use palisade_idempotency::postgres::{MIGRATION, PostgresStore};
use palisade_idempotency::redis::RedisStore;
use palisade_idempotency::{Begin, Completion, Fingerprint, IdempotencyStore, StoreKey, StoredResponse};
use palisade_tests::{Postgres, Redis, RedisCluster};
use redis::aio::MultiplexedConnection;
use suite::Fixture;

const LIVE_LOCK: Duration = Duration::from_millis(400);

async fn redis_fixture(test: &str) -> Option<(Fixture<RedisStore<MultiplexedConnection>>, Redis)> {
    let redis = Redis::connect(test).await?;
    let store = RedisStore::with_prefix(redis.conn.clone(), redis.prefix.clone()).unwrap();
    Some((
        Fixture {
            store,
            lock_expiry: LIVE_LOCK,
        },
        redis,
    ))
}

/// The same store over a Redis Cluster connection: each operation's one key
/// is routed to the node owning its slot. Keys expire on their own (the
/// suite's locks and retentions are short-lived); nothing to clean up.
async fn redis_cluster_fixture(test: &str) -> Option<Fixture<RedisStore<redis::cluster_async::ClusterConnection>>> {
    let cluster = RedisCluster::connect(test).await?;
    let store = RedisStore::with_prefix(cluster.conn.clone(), cluster.prefix.clone()).unwrap();
    Some(Fixture {
        store,
        lock_expiry: LIVE_LOCK,
    })
}

async fn postgres_fixture(test: &str) -> Option<(Fixture<PostgresStore>, Postgres)> {
    let pg = Postgres::connect(test).await?;
    let store = PostgresStore::new(pg.pool.clone());
    store.migrate().await.unwrap();
    Some((
        Fixture {
            store,
            lock_expiry: LIVE_LOCK,
        },
        pg,
    ))
}

macro_rules! live_suite {
    ($($test:ident),* $(,)?) => {
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some((fixture, redis)) = super::redis_fixture(stringify!($test)).await else { return };
                    super::suite::$test(fixture).await;
                    redis.cleanup().await;
                }
            )*
        }
        mod redis_cluster_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(fixture) = super::redis_cluster_fixture(stringify!($test)).await else { return };
                    super::suite::$test(fixture).await;
                }
            )*
        }
        mod postgres_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some((fixture, pg)) = super::postgres_fixture(stringify!($test)).await else { return };
                    super::suite::$test(fixture).await;
                    pg.cleanup().await;
                }
            )*
        }
    };
}

suite::all_tests!(live_suite);

fn response() -> StoredResponse {
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    StoredResponse {
        status: http::StatusCode::CREATED,
        headers,
        body: "{\"id\":1}".into(),
    }
}

/// Fencing at the store level: a lease taken over cannot complete or
/// release; the new owner's can.
async fn fencing<St: IdempotencyStore>(store: &St) {
    let key = StoreKey::from_bytes([7; 32]);
    let fp = Fingerprint::from_bytes([1; 32]);
    let Begin::Acquired(stale) = store.begin(&key, &fp, LIVE_LOCK).await.unwrap() else {
        panic!("acquire")
    };
    tokio::time::sleep(LIVE_LOCK * 2).await;
    let Begin::Acquired(fresh) = store.begin(&key, &fp, LIVE_LOCK * 20).await.unwrap() else {
        panic!("take over")
    };
    assert_ne!(stale, fresh);
    let retention = Duration::from_secs(60);
    assert_eq!(
        store.complete(&key, &fp, &stale, &response(), retention).await.unwrap(),
        Completion::LeaseLost
    );
    store.release(&key, &stale).await.unwrap();
    assert_eq!(
        store.begin(&key, &fp, LIVE_LOCK).await.unwrap(),
        Begin::InFlight { fingerprint: fp }
    );
    assert_eq!(
        store.complete(&key, &fp, &fresh, &response(), retention).await.unwrap(),
        Completion::Stored
    );
    store.release(&key, &fresh).await.unwrap();
    assert_eq!(
        store.begin(&key, &fp, LIVE_LOCK).await.unwrap(),
        Begin::Completed {
            fingerprint: fp,
            response: response()
        },
        "a release never removes a stored response"
    );
}

#[tokio::test]
async fn redis_fences_stale_owners_and_keeps_keys_under_its_prefix() {
    let Some((fixture, mut redis)) = redis_fixture("redis_fencing").await else {
        return;
    };
    fencing(&fixture.store).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", redis.prefix))
        .query_async(&mut redis.conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].len(), redis.prefix.len() + 64);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut redis.conn)
        .await
        .unwrap();
    assert!(
        ttl > 50_000 && ttl <= 60_000,
        "the response keeps the retention as TTL: {ttl}"
    );
    assert!(RedisStore::with_prefix(redis.conn.clone(), "").is_err());
    redis.cleanup().await;
}

#[tokio::test]
async fn postgres_fences_stale_owners_and_cleans_up_expired_rows() {
    let Some((fixture, pg)) = postgres_fixture("pg_fencing").await else {
        return;
    };
    fencing(&fixture.store).await;
    // The migration is safe to run again.
    fixture.store.migrate().await.unwrap();
    sqlx::raw_sql(MIGRATION).execute(&pg.pool).await.unwrap();

    let expired = StoreKey::from_bytes([8; 32]);
    let fp = Fingerprint::from_bytes([2; 32]);
    assert!(matches!(
        fixture
            .store
            .begin(&expired, &fp, Duration::from_millis(10))
            .await
            .unwrap(),
        Begin::Acquired(_)
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        fixture.store.cleanup_expired().await.unwrap(),
        1,
        "only the expired lock goes"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_idempotency_keys")
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the stored response stays");
    pg.cleanup().await;
}

/// A settings file may give any duration: a lock and a retention past any
/// clock's range are kept about 30 years, not refused by the server.
async fn durations_past_any_clock<St: IdempotencyStore>(store: &St) {
    let key = StoreKey::from_bytes([9; 32]);
    let fp = Fingerprint::from_bytes([2; 32]);
    let Begin::Acquired(lease) = store.begin(&key, &fp, Duration::MAX).await.unwrap() else {
        panic!("acquire")
    };
    assert_eq!(
        store
            .complete(&key, &fp, &lease, &response(), Duration::MAX)
            .await
            .unwrap(),
        Completion::Stored
    );
    assert_eq!(
        store.begin(&key, &fp, Duration::MAX).await.unwrap(),
        Begin::Completed {
            fingerprint: fp,
            response: response()
        }
    );
}

#[tokio::test]
async fn redis_and_postgres_keep_records_for_durations_past_any_clock() {
    if let Some((fixture, redis)) = redis_fixture("redis_far_future").await {
        durations_past_any_clock(&fixture.store).await;
        redis.cleanup().await;
    }
    if let Some((fixture, pg)) = postgres_fixture("pg_far_future").await {
        durations_past_any_clock(&fixture.store).await;
        pg.cleanup().await;
    }
}

/// Two instances take over one expired key at once: one gets the lock, and the other must see
/// that lock (409, or 422 against the new owner's fingerprint), never the expired record. The
/// other's statement starts before the first commits, waits on its row lock, and then finds
/// the key taken: what it reads of the row must be the new owner's, not its snapshot's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_takeover_racing_another_sees_the_new_owner_not_the_expired_record() {
    let Some((fixture, pg)) = postgres_fixture("pg_takeover_race").await else {
        return;
    };
    let store = fixture.store;
    let key = StoreKey::from_bytes([9; 32]);
    let old = Fingerprint::from_bytes([3; 32]);
    let Begin::Acquired(lease) = store.begin(&key, &old, LIVE_LOCK).await.unwrap() else {
        panic!("acquire")
    };
    // A response kept for no time at all: expired at once.
    let stored = store
        .complete(&key, &old, &lease, &response(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(stored, Completion::Stored);

    // The first instance takes the expired key over, in a transaction not yet committed.
    let first = Fingerprint::from_bytes([4; 32]);
    let mut takeover = pg.pool.begin().await.unwrap();
    let taken = sqlx::query(
        "UPDATE palisade_idempotency_keys SET fingerprint = $2, token = $3, response = NULL,
             expires_at = now() + interval '60 seconds'
         WHERE key = $1 AND expires_at <= now()",
    )
    .bind(key.to_hex())
    .bind(&first.as_bytes()[..])
    .bind(&[5u8; 16][..])
    .execute(&mut *takeover)
    .await
    .unwrap();
    assert_eq!(taken.rows_affected(), 1);

    // The second instance's begin starts now, and waits on the first one's row lock.
    let second = Fingerprint::from_bytes([6; 32]);
    let racing = tokio::spawn({
        let store = store.clone();
        async move { store.begin(&key, &second, LIVE_LOCK).await }
    });
    palisade_tests::wait_until("the second begin waits on the row lock", Duration::from_secs(10), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%palisade_idempotency_keys%'",
        )
        .fetch_one(&pg.pool)
        .await
        .unwrap();
        waiting == 1
    })
    .await;
    takeover.commit().await.unwrap();

    let begun = racing.await.unwrap().unwrap();
    assert_eq!(begun, Begin::InFlight { fingerprint: first });
    pg.cleanup().await;
}

/// A connection that sends every command twice and answers with the second reply: what the
/// Redis Cluster client does when a connection drops after a command ran but before its
/// reply came back (it connects again and sends the command anew).
#[derive(Clone)]
struct SentTwice(MultiplexedConnection);

impl redis::aio::ConnectionLike for SentTwice {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            self.0.req_packed_command(cmd).await?;
            self.0.req_packed_command(cmd).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            self.0.req_packed_commands(pipeline, offset, count).await?;
            self.0.req_packed_commands(pipeline, offset, count).await
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// A `begin` or `complete` that ran, lost its reply and was sent again finds its own work:
/// the lock it took is its own (not a request in flight answered 409 until the lock
/// expires), the response it stored is stored (not a lease lost).
#[tokio::test]
async fn redis_a_begin_or_complete_sent_again_finds_its_own_work() {
    let Some(redis) = Redis::connect("redis_sent_twice").await else {
        return;
    };
    let store = RedisStore::with_prefix(SentTwice(redis.conn.clone()), redis.prefix.clone()).unwrap();
    let key = StoreKey::from_bytes([11; 32]);
    let fp = Fingerprint::from_bytes([12; 32]);
    let begun = store.begin(&key, &fp, Duration::from_secs(60)).await.unwrap();
    let Begin::Acquired(lease) = begun else {
        panic!("its own lock: {begun:?}")
    };
    let stored = store
        .complete(&key, &fp, &lease, &response(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(stored, Completion::Stored);
    let plain = RedisStore::with_prefix(redis.conn.clone(), redis.prefix.clone()).unwrap();
    assert!(matches!(
        plain.begin(&key, &fp, Duration::from_secs(60)).await.unwrap(),
        Begin::Completed { .. }
    ));
    // Another request's lock is still another's.
    let other = StoreKey::from_bytes([13; 32]);
    assert!(matches!(
        plain.begin(&other, &fp, Duration::from_secs(60)).await.unwrap(),
        Begin::Acquired(_)
    ));
    assert!(matches!(
        store.begin(&other, &fp, Duration::from_secs(60)).await.unwrap(),
        Begin::InFlight { .. }
    ));
    redis.cleanup().await;
}
