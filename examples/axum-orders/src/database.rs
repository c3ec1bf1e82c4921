//! The database the orders and their outbox live in: SQLite or PostgreSQL,
//! chosen by the URL's scheme.
//!
//! Both backends take the same queries (`$1`-style parameters work in both);
//! what differs is the pool type, the column types of the `orders` table, the
//! outbox store the relay claims from, and, with PostgreSQL, the `NOTIFY`
//! wake-ups that let a commit in one instance wake the relays of the others.

use std::str::FromStr as _;
use std::time::Duration;

use palisade::outbox::postgres::{self as outbox_pg, PgStore};
use palisade::outbox::sqlite::{self as outbox_sqlite, SqliteStore};
use palisade::outbox::{
    Backlog, OutboxContext, OutboxError, OutboxStore, Publisher, Relay, RelayHandle, Wakeup, stage,
};
use palisade::prelude::BoxError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tokio::task::JoinHandle;

use crate::{Order, OrderRow};

/// The database kinds `--database-url` accepts, told apart by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:` followed by a file path (created when missing).
    Sqlite,
    /// `postgres://` or `postgresql://`.
    Postgres,
}

impl Backend {
    /// The backend a database URL names; anything but `sqlite:`, `postgres://` and
    /// `postgresql://` is refused.
    pub fn of(url: &str) -> Result<Self, UnsupportedDatabase> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(UnsupportedDatabase(url.to_owned()))
        }
    }

    /// The name `/health` reports: `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A database URL of neither supported scheme.
#[derive(Debug, thiserror::Error)]
#[error("unsupported database URL {0:?}: use sqlite:<file> or postgres://user@host:port/database")]
pub struct UnsupportedDatabase(pub String);

/// The orders table; the column types differ (`BIGINT` in PostgreSQL decodes as
/// the `i64` that SQLite's `INTEGER` does).
const CREATE_ORDERS_SQLITE: &str = "CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    items TEXT NOT NULL,
    total_amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL
)";

const CREATE_ORDERS_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    items TEXT NOT NULL,
    total_amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL
)";

const INSERT_ORDER: &str = "INSERT INTO orders (id, status, customer_id, items, total_amount, currency, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
const SELECT_ORDER: &str = "SELECT id, status, customer_id, items, total_amount, currency, created_at FROM orders";
const UPDATE_STATUS: &str = "UPDATE orders SET status = $1 WHERE id = $2";

/// A pool on the orders database.
#[derive(Debug, Clone)]
pub enum Database {
    /// An SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL database; tables live in the connections' `search_path`
    /// (set it per instance group with the URL's
    /// `options=-c%20search_path%3D<schema>`).
    Postgres(PgPool),
}

impl Database {
    /// Connects to the database `url` names and creates the orders and outbox
    /// tables when missing.
    pub async fn connect(url: &str) -> Result<Self, BoxError> {
        let database = match Backend::of(url)? {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await?;
                outbox_sqlite::migrate(&pool).await?;
                sqlx::query(CREATE_ORDERS_SQLITE).execute(&pool).await?;
                Self::Sqlite(pool)
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await
                    .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
                outbox_pg::migrate(&pool).await?;
                sqlx::query(CREATE_ORDERS_POSTGRES).execute(&pool).await?;
                Self::Postgres(pool)
            }
        };
        Ok(database)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes the pool: later queries fail (and `/health` reports the database down).
    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }

    /// Whether the database answers a `SELECT 1`.
    pub(crate) async fn ping(&self) -> bool {
        match self {
            Self::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
            Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
        }
    }

    /// The outbox's pending and dead-lettered events.
    pub(crate) async fn backlog(&self) -> Result<Backlog, OutboxError> {
        match self {
            Self::Sqlite(pool) => SqliteStore::new(pool.clone()).backlog().await,
            Self::Postgres(pool) => PgStore::new(pool.clone()).backlog().await,
        }
    }

    /// Starts the outbox relay on this database's store, woken by `wakeup`.
    /// With PostgreSQL it also starts the `NOTIFY` forwarder and listener, so
    /// a commit in any instance on the same schema wakes every instance's relay;
    /// the returned tasks run until aborted.
    pub(crate) async fn spawn_relay<P: Publisher>(
        &self,
        publisher: P,
        wakeup: Wakeup,
    ) -> Result<(RelayHandle, Vec<JoinHandle<()>>), BoxError> {
        match self {
            Self::Sqlite(pool) => {
                let relay = Relay::builder(SqliteStore::new(pool.clone()), publisher)
                    .name("orders")
                    .wakeup(wakeup)
                    .build()?;
                Ok((relay.spawn(), Vec::new()))
            }
            Self::Postgres(pool) => {
                let channel = Self::wakeup_channel(pool).await?;
                // The relay's own pool, without a health check on every claim (see `PgStore`).
                let relay_pool = PgPoolOptions::new()
                    .max_connections(4)
                    .test_before_acquire(false)
                    .connect_with(pool.connect_options().as_ref().clone())
                    .await?;
                let relay = Relay::builder(PgStore::new(relay_pool), publisher)
                    .name("orders")
                    .wakeup(wakeup.clone())
                    .build()?;
                let tasks = vec![
                    tokio::spawn(outbox_pg::forward_wakeups(
                        pool.clone(),
                        channel.clone(),
                        wakeup.clone(),
                    )),
                    tokio::spawn(outbox_pg::wake_on_notify(pool.clone(), channel, wakeup)),
                ];
                Ok((relay.spawn(), tasks))
            }
        }
    }

    /// The `NOTIFY` channel the relays of every instance on this PostgreSQL
    /// schema wake each other on: `orders_outbox_` and the md5 of the schema's
    /// name. Channels are per database, not per schema: one named after the
    /// schema keeps instances on other schemas (other tests, other tenants)
    /// from waking these relays; md5 keeps the name under the 63-byte limit.
    pub async fn wakeup_channel(pool: &PgPool) -> Result<String, sqlx::Error> {
        sqlx::query_scalar("SELECT 'orders_outbox_' || md5(current_schema())")
            .fetch_one(pool)
            .await
    }

    /// Stores the order and stages its `OrderCreated` event in one transaction.
    pub(crate) async fn insert_order(&self, ctx: &OutboxContext, order: &Order) -> Result<(), BoxError> {
        let items = serde_json::to_string(&order.items)?;
        // Published on the event type (NATS: `orders.events.OrderCreated`).
        let event = ctx
            .event("OrderCreated", "Order", order.id.clone(), serde_json::to_value(order)?)
            .with_destination("OrderCreated");
        // The same statements on either backend; only sqlx's transaction types differ.
        macro_rules! insert_and_stage {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await?;
                sqlx::query(INSERT_ORDER)
                    .bind(&order.id)
                    .bind(&order.status)
                    .bind(&order.customer_id)
                    .bind(&items)
                    .bind(order.total_amount)
                    .bind(&order.currency)
                    .bind(&order.created_at)
                    .execute(&mut *tx)
                    .await?;
                stage(&mut *tx, &event).await?;
                tx.commit().await?;
            }};
        }
        match self {
            Self::Sqlite(pool) => insert_and_stage!(pool),
            Self::Postgres(pool) => insert_and_stage!(pool),
        }
        Ok(())
    }

    /// Sets an order's status; false when there is no such order.
    pub(crate) async fn set_status(&self, order_id: &str, status: &str) -> Result<bool, sqlx::Error> {
        let updated = match self {
            Self::Sqlite(pool) => sqlx::query(UPDATE_STATUS)
                .bind(status)
                .bind(order_id)
                .execute(pool)
                .await?
                .rows_affected(),
            Self::Postgres(pool) => sqlx::query(UPDATE_STATUS)
                .bind(status)
                .bind(order_id)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(updated == 1)
    }

    /// The stored order `id`, if any.
    pub(crate) async fn order(&self, id: &str) -> Result<Option<OrderRow>, sqlx::Error> {
        let query = format!("{SELECT_ORDER} WHERE id = $1");
        match self {
            Self::Sqlite(pool) => sqlx::query_as(&query).bind(id).fetch_optional(pool).await,
            Self::Postgres(pool) => sqlx::query_as(&query).bind(id).fetch_optional(pool).await,
        }
    }

    /// Every stored order, oldest first (ids are time-ordered UUIDv7s).
    pub(crate) async fn orders(&self) -> Result<Vec<OrderRow>, sqlx::Error> {
        let query = format!("{SELECT_ORDER} ORDER BY id");
        match self {
            Self::Sqlite(pool) => sqlx::query_as(&query).fetch_all(pool).await,
            Self::Postgres(pool) => sqlx::query_as(&query).fetch_all(pool).await,
        }
    }
}
