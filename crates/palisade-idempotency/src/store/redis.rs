//! A store in Redis, shared by every server instance (feature `redis`).
//!
//! Each key is one Redis string under a configurable prefix (default
//! `palisade:idempotency:`) followed by the 64-hex-digit store key. Its value
//! is `L | fingerprint (32) | token (16)` while in flight, with the lock's
//! expiry as the key's TTL, and `C | fingerprint | token | response` once
//! completed, with the retention as TTL. A crashed instance's lock simply
//! expires.
//!
//! Every operation is one round trip: a Lua script, atomic on the server.
//! `begin` reads the key and sets the lock if it is absent; `complete` writes
//! the response only if the key still holds this request's lock (or nobody
//! took the expired key over); `release` deletes the key only if it still
//! holds this request's lock. A `begin` or `complete` sent again after its
//! reply was lost (the cluster client does, once connected again) finds its
//! own lock or response and reports its own work done. Scripts run with `EVALSHA` (loaded on first
//! use), so a replay costs one round trip.
//!
//! The store runs on redis's `ConnectionManager` by default, which connects
//! again after its connection drops: see [`RedisStore`].
//!
//! **Redis Cluster**: with the `redis-cluster` feature, give the store a
//! `redis::cluster_async::ClusterConnection`. Every operation reads and
//! writes one key, so its script runs in that key's hash slot, on the node
//! that owns it, and keys spread over the cluster. Keep hash tags (`{...}`)
//! out of the prefix: a tag there would put every key in one slot.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use redis::Script;
use redis::aio::{ConnectionLike, ConnectionManager};

use super::{Begin, Completion, IdempotencyStore, Lease, StoredResponse, codec};
use crate::error::{ConfigError, StoreError};
use crate::hash::{Fingerprint, StoreKey};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "palisade:idempotency:";

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

const IN_FLIGHT: u8 = b'L';
const COMPLETED: u8 = b'C';
const HEADER_LEN: usize = 1 + 32 + 16;

// A script that ran but whose reply was lost is sent again (the cluster client does, after
// connecting again): `begin` finding its own lock, and `complete` its own response, report
// their own work done rather than another request's.
static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'L' and string.sub(v, 34, 49) == string.sub(ARGV[1], 34, 49) then return false end
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false",
    )
});

static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'C' and string.sub(v, 34, 49) == ARGV[1] then return 1 end
if v and (string.sub(v, 1, 1) ~= 'L' or string.sub(v, 34, 49) ~= ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'L' and string.sub(v, 34, 49) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0",
    )
});

/// Keys, locks and responses in Redis.
///
/// Generic over the connection: any `ConnectionLike + Clone + Send + Sync`.
/// The default and the one to use is redis's [`ConnectionManager`]: after
/// the connection drops (Redis restarted, a network cut, a failover), the
/// calls in flight fail (the layer answers 503) and the manager connects
/// again in the background, so the store serves again without a restart. A
/// bare [`MultiplexedConnection`](redis::aio::MultiplexedConnection) also
/// works but never reconnects: once its connection drops, every call fails
/// until the process makes a new one.
///
/// ```no_run
/// # async fn connect() -> Result<(), Box<dyn std::error::Error>> {
/// use palisade_idempotency::redis::RedisStore;
/// use redis::aio::ConnectionManager;
///
/// let conn = ConnectionManager::new(redis::Client::open("redis://127.0.0.1/")?).await?;
/// let store: RedisStore = RedisStore::new(conn);
/// # let _ = store; Ok(()) }
/// ```
///
/// Bound a command's wait for its reply with the manager's own settings
/// (`ConnectionManagerConfig::set_response_timeout`) or leave it to the
/// layer's [store timeout](crate::IdempotencyBuilder::store_timeout).
#[derive(Clone)]
pub struct RedisStore<C = ConnectionManager> {
    conn: C,
    prefix: Arc<str>,
}

impl<C> std::fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl<C> RedisStore<C> {
    /// A store on `conn` with the [`DEFAULT_PREFIX`].
    pub fn new(conn: C) -> Self {
        Self {
            conn,
            prefix: Arc::from(DEFAULT_PREFIX),
        }
    }

    /// A store on `conn` whose keys start with `prefix`.
    pub fn with_prefix(conn: C, prefix: impl Into<String>) -> Result<Self, ConfigError> {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return Err(ConfigError::EmptyPrefix);
        }
        Ok(Self {
            conn,
            prefix: Arc::from(prefix),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn redis_key(&self, key: &StoreKey) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn record(state: u8, fingerprint: &Fingerprint, token: u128) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER_LEN);
    value.push(state);
    value.extend_from_slice(fingerprint.as_bytes());
    value.extend_from_slice(&token.to_be_bytes());
    value
}

fn parse_existing(value: Vec<u8>) -> Result<Begin, StoreError> {
    if value.len() < HEADER_LEN {
        return Err(StoreError::corrupt("redis idempotency record"));
    }
    let mut fingerprint = [0_u8; 32];
    fingerprint.copy_from_slice(&value[1..33]);
    let fingerprint = Fingerprint::from_bytes(fingerprint);
    match value[0] {
        IN_FLIGHT => Ok(Begin::InFlight { fingerprint }),
        COMPLETED => {
            let response = codec::decode(Bytes::from(value).slice(HEADER_LEN..))?;
            Ok(Begin::Completed { fingerprint, response })
        }
        _ => Err(StoreError::corrupt("redis idempotency record")),
    }
}

impl<C> IdempotencyStore for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    type BeginFuture = BoxFuture<Begin>;
    type CompleteFuture = BoxFuture<Completion>;
    type ReleaseFuture = BoxFuture<()>;

    fn begin(&self, key: &StoreKey, fingerprint: &Fingerprint, lock_expiry: Duration) -> Self::BeginFuture {
        let mut conn = self.conn.clone();
        let key = self.redis_key(key);
        let token = uuid::Uuid::now_v7().as_u128();
        let lock = record(IN_FLIGHT, fingerprint, token);
        Box::pin(async move {
            let existing: Option<Vec<u8>> = BEGIN
                .key(key)
                .arg(lock)
                .arg(palisade_core::deadline::expiry_millis(lock_expiry))
                .invoke_async(&mut conn)
                .await
                .map_err(StoreError::backend)?;
            match existing {
                None => Ok(Begin::Acquired(Lease::new(token))),
                Some(value) => parse_existing(value),
            }
        })
    }

    fn complete(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        lease: &Lease,
        response: &StoredResponse,
        retention: Duration,
    ) -> Self::CompleteFuture {
        let mut conn = self.conn.clone();
        let key = self.redis_key(key);
        let token = lease.token().to_be_bytes();
        let mut value = record(COMPLETED, fingerprint, lease.token());
        value.extend_from_slice(&codec::encode(response));
        Box::pin(async move {
            let stored: i64 = COMPLETE
                .key(key)
                .arg(&token[..])
                .arg(value)
                .arg(palisade_core::deadline::expiry_millis(retention))
                .invoke_async(&mut conn)
                .await
                .map_err(StoreError::backend)?;
            Ok(if stored == 1 {
                Completion::Stored
            } else {
                Completion::LeaseLost
            })
        })
    }

    fn release(&self, key: &StoreKey, lease: &Lease) -> Self::ReleaseFuture {
        let mut conn = self.conn.clone();
        let key = self.redis_key(key);
        let token = lease.token().to_be_bytes();
        Box::pin(async move {
            let _: i64 = RELEASE
                .key(key)
                .arg(&token[..])
                .invoke_async(&mut conn)
                .await
                .map_err(StoreError::backend)?;
            Ok(())
        })
    }
}
