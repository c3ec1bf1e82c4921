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

use palisade::fallback::{FallbackLayer, QueueForLater};
use tower::Layer as _;
use tower::util::BoxCloneSyncService;

use crate::{Order, OrderRow, PAYMENTS, PaymentsClient, queued_charge};

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

/// A database URL of neither supported scheme. Its message shows the URL
/// with any password replaced by `***` ([`crate::redact_url`]).
#[derive(Debug, thiserror::Error)]
#[error("unsupported database URL {:?}: use sqlite:<file> or postgres://user@host:port/database", crate::redact_url(.0))]
pub struct UnsupportedDatabase(pub String);

/// The orders table; the column types differ (`BIGINT` in PostgreSQL decodes as
/// the `i64` that SQLite's `INTEGER` does). `request_hash` is the fingerprint of
/// the order as first requested, `leased_at` (Unix milliseconds) when a request
/// last began to charge an order still `new`.
const CREATE_ORDERS_SQLITE: &str = "CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    items TEXT NOT NULL,
    total_amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL,
    request_hash TEXT NOT NULL DEFAULT '',
    leased_at INTEGER NOT NULL DEFAULT 0
)";

const CREATE_ORDERS_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    items TEXT NOT NULL,
    total_amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL,
    request_hash TEXT NOT NULL DEFAULT '',
    leased_at BIGINT NOT NULL DEFAULT 0
)";

/// The columns a table made before them lacks.
const ADDED_COLUMNS_SQLITE: [(&str, &str); 2] = [
    (
        "request_hash",
        "ALTER TABLE orders ADD COLUMN request_hash TEXT NOT NULL DEFAULT ''",
    ),
    (
        "leased_at",
        "ALTER TABLE orders ADD COLUMN leased_at INTEGER NOT NULL DEFAULT 0",
    ),
];
const ADD_COLUMNS_POSTGRES: &str = "ALTER TABLE orders
    ADD COLUMN IF NOT EXISTS request_hash TEXT NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS leased_at BIGINT NOT NULL DEFAULT 0";

/// The statuses of an order the payment was taken or queued for: the only
/// ones the orders routes show. `new` (being charged), `declined`,
/// `refunding` and `cancelled` are the creation's own bookkeeping.
const VISIBLE: &str = "status IN ('payment_queued', 'pending', 'paid', 'payment_failed')";

const RESERVE_ORDER: &str = "INSERT INTO orders
     (id, status, customer_id, items, total_amount, currency, created_at, request_hash, leased_at)
     VALUES ($1, 'new', $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (id) DO NOTHING";
const LEASE: &str = "UPDATE orders SET leased_at = $1 WHERE id = $2 AND status = 'new' AND request_hash = $3";
const SELECT_ORDER: &str = "SELECT id, status, customer_id, items, total_amount, currency, created_at FROM orders";
const SELECT_RESERVED: &str =
    "SELECT id, status, customer_id, items, total_amount, currency, created_at, request_hash FROM orders WHERE id = $1";

/// An order's columns and the fingerprint it was first requested with.
type ReservedRow = (String, String, String, String, i64, String, String, String);
/// Moves an order whose charge was made from the status given as `$2` to `pending`.
const COMPLETE: &str = "UPDATE orders SET status = 'pending' WHERE id = $1 AND status = $2";
const DECLINE: &str = "UPDATE orders SET status = 'declined' WHERE id = $1 AND status IN ('new', 'payment_queued')";
/// Marks an order `payment_queued`, in the transaction that stages its
/// queued charge (the fallback's [`Queued::with_update`](palisade::fallback::Queued::with_update));
/// `$1` is the order's id.
pub(crate) const QUEUE_CHARGE: &str = "UPDATE orders SET status = 'payment_queued' WHERE id = $1 AND status = 'new'";
const SETTLE: &str = "UPDATE orders SET status = $1 WHERE id = $2 AND status = 'pending'";
const STATUS: &str = "SELECT status FROM orders WHERE id = $1";
const ABANDONED: &str =
    "SELECT id, status FROM orders WHERE (status = 'new' AND leased_at < $1) OR status = 'refunding'";
const CLAIM_FOR_REFUND: &str =
    "UPDATE orders SET status = 'refunding' WHERE id = $1 AND status = 'new' AND leased_at < $2";
const REFUNDED: &str = "UPDATE orders SET status = 'cancelled' WHERE id = $1 AND status = 'refunding'";

/// What a webhook's status did to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The order was `pending` and now has the status.
    Applied,
    /// The order was already `paid` or `payment_failed`: nothing changed.
    Settled,
    /// No such order (or one whose payment was never taken).
    Unknown,
}

/// Runs `$body` with `$pool` bound to the pool of either backend.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Sqlite($pool) => $body,
            Database::Postgres($pool) => $body,
        }
    };
}

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
                for (column, add) in ADDED_COLUMNS_SQLITE {
                    let present: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('orders') WHERE name = $1")
                            .bind(column)
                            .fetch_one(&pool)
                            .await?;
                    if present == 0 {
                        sqlx::query(add).execute(&pool).await?;
                    }
                }
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
                sqlx::query(ADD_COLUMNS_POSTGRES).execute(&pool).await?;
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

    /// `payments` behind a fallback that, when the payments breaker is open
    /// or its bulkhead full, queues the charge instead: the order becomes
    /// `payment_queued` and its `ChargeQueued` command is staged, in one
    /// transaction on this database, and the call answers `202 Accepted`.
    pub(crate) fn queue_charges(&self, payments: PaymentsClient) -> Result<PaymentsClient, BoxError> {
        on_pool!(self, pool => {
            let fallback = FallbackLayer::builder(PAYMENTS)
                .fallback(QueueForLater::new(pool.clone(), queued_charge))
                .build()?;
            Ok(BoxCloneSyncService::new(fallback.layer(payments)))
        })
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

    /// Stores `order` as `new` unless an order with its id exists, and leases
    /// it to this request when it is `new` and was requested with the same
    /// fingerprint (see [`Database::abandoned`]). Returns the order as stored,
    /// with the fingerprint it was first requested with. An order already
    /// finished costs one `SELECT`.
    pub(crate) async fn reserve(
        &self,
        order: &Order,
        request_hash: &str,
        now_ms: i64,
    ) -> Result<Option<(OrderRow, String)>, BoxError> {
        let items = serde_json::to_string(&order.items)?;
        on_pool!(self, pool => {
            let fetch = || sqlx::query_as::<_, ReservedRow>(SELECT_RESERVED).bind(&order.id).fetch_optional(pool);
            let found = match fetch().await? {
                // The first attempt: the order is stored, leased to it.
                None => {
                    let inserted = sqlx::query(RESERVE_ORDER)
                        .bind(&order.id)
                        .bind(&order.customer_id)
                        .bind(&items)
                        .bind(order.total_amount)
                        .bind(&order.currency)
                        .bind(&order.created_at)
                        .bind(request_hash)
                        .bind(now_ms)
                        .execute(pool)
                        .await?
                        .rows_affected();
                    if inserted == 1 {
                        let row = (
                            order.id.clone(),
                            order.status.clone(),
                            order.customer_id.clone(),
                            items,
                            order.total_amount,
                            order.currency.clone(),
                            order.created_at.clone(),
                        );
                        return Ok(Some((row, request_hash.to_owned())));
                    }
                    // A concurrent attempt stored it first.
                    fetch().await?
                }
                // A retry of an order still `new` takes the lease, unless the
                // compensation took the order first: then it is read again.
                Some(found) if found.1 == "new" && found.7 == request_hash => {
                    let leased = sqlx::query(LEASE)
                        .bind(now_ms)
                        .bind(&order.id)
                        .bind(request_hash)
                        .execute(pool)
                        .await?
                        .rows_affected();
                    if leased == 1 { Some(found) } else { fetch().await? }
                }
                Some(found) => Some(found),
            };
            Ok(found.map(|(id, status, customer_id, items, total_amount, currency, created_at, hash)| {
                ((id, status, customer_id, items, total_amount, currency, created_at), hash)
            }))
        })
    }

    /// Moves a charged order from `from` (`new`, or `payment_queued` when its
    /// queued charge was made) to `pending` and stages its `OrderCreated`
    /// event, stamped with `ctx`'s ids, in the same transaction; false
    /// (nothing written) when the order is no longer `from`.
    pub(crate) async fn complete(&self, ctx: &OutboxContext, order: &Order, from: &str) -> Result<bool, BoxError> {
        let order = Order {
            status: "pending".to_owned(),
            ..order.clone()
        };
        // Published on the event type (NATS: `orders.events.OrderCreated`).
        let event = ctx
            .event("OrderCreated", "Order", order.id.clone(), serde_json::to_value(&order)?)
            .with_destination("OrderCreated");
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query(COMPLETE).bind(&order.id).bind(from).execute(&mut *tx).await?.rows_affected();
            if moved != 1 {
                return Ok(false);
            }
            stage(&mut *tx, &event).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Records that payments declined the order's charge (when still `new` or
    /// `payment_queued`).
    pub(crate) async fn decline(&self, order_id: &str) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => sqlx::query(DECLINE).bind(order_id).execute(pool).await.map(drop))
    }

    /// Moves a `pending` order to `status` (`paid` or `payment_failed`); an
    /// order already settled keeps its status.
    pub(crate) async fn settle(&self, order_id: &str, status: &str) -> Result<Transition, sqlx::Error> {
        on_pool!(self, pool => {
            let moved = sqlx::query(SETTLE).bind(status).bind(order_id).execute(pool).await?.rows_affected();
            if moved == 1 {
                return Ok(Transition::Applied);
            }
            let now: Option<String> = sqlx::query_scalar(STATUS).bind(order_id).fetch_optional(pool).await?;
            Ok(match now.as_deref() {
                Some("paid" | "payment_failed") => Transition::Settled,
                _ => Transition::Unknown,
            })
        })
    }

    /// The orders to refund, with their status: `new` ones whose lease is
    /// older than `cutoff_ms`, and `refunding` ones whose refund is not confirmed.
    pub(crate) async fn abandoned(&self, cutoff_ms: i64) -> Result<Vec<(String, String)>, sqlx::Error> {
        on_pool!(self, pool => sqlx::query_as(ABANDONED).bind(cutoff_ms).fetch_all(pool).await)
    }

    /// Moves an abandoned order from `new` to `refunding`, unless a request
    /// leased it since `cutoff_ms`; true when this call moved it.
    pub(crate) async fn claim_for_refund(&self, order_id: &str, cutoff_ms: i64) -> Result<bool, sqlx::Error> {
        on_pool!(self, pool => Ok(sqlx::query(CLAIM_FOR_REFUND)
            .bind(order_id)
            .bind(cutoff_ms)
            .execute(pool)
            .await?
            .rows_affected() == 1))
    }

    /// Records a `refunding` order's refund as done: it is `cancelled`.
    pub(crate) async fn refunded(&self, order_id: &str) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => sqlx::query(REFUNDED).bind(order_id).execute(pool).await.map(drop))
    }

    /// The stored order `id`, if its payment was taken.
    pub(crate) async fn order(&self, id: &str) -> Result<Option<OrderRow>, sqlx::Error> {
        let query = format!("{SELECT_ORDER} WHERE id = $1 AND {VISIBLE}");
        on_pool!(self, pool => sqlx::query_as(&query).bind(id).fetch_optional(pool).await)
    }

    /// Every order whose payment was taken, oldest first.
    pub(crate) async fn orders(&self) -> Result<Vec<OrderRow>, sqlx::Error> {
        let query = format!("{SELECT_ORDER} WHERE {VISIBLE} ORDER BY created_at, id");
        on_pool!(self, pool => sqlx::query_as(&query).fetch_all(pool).await)
    }
}
