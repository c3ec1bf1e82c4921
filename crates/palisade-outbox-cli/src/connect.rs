//! Opening the store a database URL names.

use std::str::FromStr;
use std::time::Duration;

use palisade_outbox::postgres::PgStore;
use palisade_outbox::sqlite::SqliteStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use palisade_outbox::error_chain;

use crate::error::Failure;

/// How long to wait for the database to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The outbox of a PostgreSQL or an SQLite database.
pub(crate) enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Connects to `url` with one connection, read-only unless the command `writes` (PostgreSQL:
/// `default_transaction_read_only`; SQLite: the file opened read-only). An SQLite file must
/// exist.
pub(crate) async fn connect(url: &str, writes: bool) -> Result<Store, Failure> {
    let cannot = |error: sqlx::Error| Failure::error(format!("cannot open the database: {}", error_chain(&error)));
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut options = PgConnectOptions::from_str(url).map_err(cannot)?;
        if !writes {
            options = options.options([("default_transaction_read_only", "on")]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(cannot)?;
        Ok(Store::Postgres(PgStore::new(pool)))
    } else if url.starts_with("sqlite:") {
        let cannot = |error: sqlx::Error| {
            Failure::error(format!(
                "cannot open the database (an SQLite file must exist; this tool never creates one): {}",
                error_chain(&error)
            ))
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(cannot)?
            .create_if_missing(false)
            .read_only(!writes);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(cannot)?;
        Ok(Store::Sqlite(SqliteStore::new(pool)))
    } else {
        Err(Failure::usage(
            "the database URL must start with postgres://, postgresql:// or sqlite:".to_owned(),
        ))
    }
}
