//! A store in PostgreSQL, shared by every server instance (feature `postgres`).
//!
//! One table, `palisade_idempotency_keys` (in the connection's
//! `search_path`), created by [`PostgresStore::migrate`] from the shipped
//! [`MIGRATION`]. Expiry is on the database's clock: `begin` takes over a row
//! whose lock or response has expired, and [`PostgresStore::cleanup_expired`]
//! deletes such rows; schedule it (say, hourly) to keep the table small.
//!
//! - `begin` is one statement: `INSERT .. ON CONFLICT (key) DO UPDATE ..
//!   WHERE expires_at <= now()` takes the lock when the key is free or
//!   expired, and the same statement returns the existing row otherwise
//!   (run again when the row it can see is one another instance has just
//!   taken over).
//! - `complete` is one `INSERT .. ON CONFLICT DO UPDATE .. WHERE token = $token
//!   AND response IS NULL`: it writes only while this request's lock is the
//!   row's (or the row is gone, so nobody took it over).
//! - `release` deletes the row only while it holds this request's lock.
//!
//! A connection that drops fails the call on it (the layer answers 503);
//! the pool discards it and opens a new one for the next call, so the store
//! serves again once PostgreSQL is reachable. Give the pool an
//! `acquire_timeout` shorter than the layer's store timeout so a pool that
//! cannot connect fails fast.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use palisade_core::deadline::FAR_FUTURE;
use sqlx::PgPool;

use super::{Begin, Completion, IdempotencyStore, Lease, StoredResponse, codec};
use crate::error::StoreError;
use crate::hash::{Fingerprint, StoreKey};

/// The SQL that creates the store's table; [`PostgresStore::migrate`] runs it.
pub const MIGRATION: &str = include_str!("../../migrations/postgres.sql");

/// `begin`'s row: acquired, and otherwise the existing fingerprint and response.
type BeginRow = (bool, Option<Vec<u8>>, Option<Vec<u8>>);

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

const BEGIN: &str = "
WITH acquired AS (
    INSERT INTO palisade_idempotency_keys AS k (key, fingerprint, token, response, expires_at)
    VALUES ($1, $2, $3, NULL, now() + make_interval(secs => $4))
    ON CONFLICT (key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token, response = NULL, expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= now()
    RETURNING 1
)
SELECT TRUE, NULL::bytea, NULL::bytea FROM acquired
UNION ALL
SELECT FALSE, k.fingerprint, k.response FROM palisade_idempotency_keys k
WHERE k.key = $1 AND k.expires_at > now() AND NOT EXISTS (SELECT 1 FROM acquired)";

const COMPLETE: &str = "
INSERT INTO palisade_idempotency_keys AS k (key, fingerprint, token, response, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
ON CONFLICT (key) DO UPDATE
    SET response = EXCLUDED.response, expires_at = EXCLUDED.expires_at
    WHERE k.token = EXCLUDED.token AND k.response IS NULL";

const RELEASE: &str = "DELETE FROM palisade_idempotency_keys WHERE key = $1 AND token = $2 AND response IS NULL";

const CLEANUP: &str = "DELETE FROM palisade_idempotency_keys WHERE expires_at <= now()";

/// How often `begin` re-runs when a concurrent insert or takeover committed
/// after its snapshot: the statement then finds the key taken but sees no
/// row, or only the expired one that was taken over (whose fingerprint and
/// response are no longer the key's). Rare, and settled by the next attempt,
/// whose snapshot sees the new owner.
const BEGIN_ATTEMPTS: usize = 5;

/// Keys, locks and responses in a PostgreSQL table.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// A store on `pool`. Run [`migrate`](Self::migrate) once before use.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates the table and its index if they do not exist ([`MIGRATION`]).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::raw_sql(MIGRATION)
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    /// Deletes every row whose lock or response has expired; returns how many.
    pub async fn cleanup_expired(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(CLEANUP)
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(done.rows_affected())
    }
}

fn fingerprint_from(bytes: Option<Vec<u8>>) -> Result<Fingerprint, StoreError> {
    let bytes: [u8; 32] = bytes
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::corrupt("postgres idempotency fingerprint"))?;
    Ok(Fingerprint::from_bytes(bytes))
}

impl IdempotencyStore for PostgresStore {
    type BeginFuture = BoxFuture<Begin>;
    type CompleteFuture = BoxFuture<Completion>;
    type ReleaseFuture = BoxFuture<()>;

    fn begin(&self, key: &StoreKey, fingerprint: &Fingerprint, lock_expiry: Duration) -> Self::BeginFuture {
        let pool = self.pool.clone();
        let key = key.to_hex();
        let fingerprint = fingerprint.as_bytes().to_vec();
        let token = uuid::Uuid::now_v7().as_u128();
        Box::pin(async move {
            for _ in 0..BEGIN_ATTEMPTS {
                let row: Option<BeginRow> = sqlx::query_as(BEGIN)
                    .bind(&key)
                    .bind(&fingerprint)
                    .bind(&token.to_be_bytes()[..])
                    .bind(lock_expiry.min(FAR_FUTURE).as_secs_f64())
                    .fetch_optional(&pool)
                    .await
                    .map_err(StoreError::backend)?;
                match row {
                    Some((true, _, _)) => return Ok(Begin::Acquired(Lease::new(token))),
                    Some((false, fingerprint, None)) => {
                        return Ok(Begin::InFlight {
                            fingerprint: fingerprint_from(fingerprint)?,
                        });
                    }
                    Some((false, fingerprint, Some(response))) => {
                        let fingerprint = fingerprint_from(fingerprint)?;
                        let response = codec::decode(Bytes::from(response))?;
                        return Ok(Begin::Completed { fingerprint, response });
                    }
                    None => continue,
                }
            }
            Err(StoreError::backend(
                "postgres idempotency begin kept racing a concurrent insert",
            ))
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
        let pool = self.pool.clone();
        let key = key.to_hex();
        let fingerprint = fingerprint.as_bytes().to_vec();
        let token = lease.token().to_be_bytes();
        let response = codec::encode(response);
        Box::pin(async move {
            let done = sqlx::query(COMPLETE)
                .bind(key)
                .bind(fingerprint)
                .bind(&token[..])
                .bind(response)
                .bind(retention.min(FAR_FUTURE).as_secs_f64())
                .execute(&pool)
                .await
                .map_err(StoreError::backend)?;
            Ok(if done.rows_affected() == 1 {
                Completion::Stored
            } else {
                Completion::LeaseLost
            })
        })
    }

    fn release(&self, key: &StoreKey, lease: &Lease) -> Self::ReleaseFuture {
        let pool = self.pool.clone();
        let key = key.to_hex();
        let token = lease.token().to_be_bytes();
        Box::pin(async move {
            sqlx::query(RELEASE)
                .bind(key)
                .bind(&token[..])
                .execute(&pool)
                .await
                .map_err(StoreError::backend)?;
            Ok(())
        })
    }
}
