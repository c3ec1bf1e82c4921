//! Fixtures shared by the SQLite-backed test files.

use std::sync::atomic::{AtomicUsize, Ordering};

use palisade_outbox::sqlite::migrate;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// A fresh database file, removed when dropped.
pub(crate) struct Db {
    pub(crate) pool: SqlitePool,
    path: std::path::PathBuf,
}

impl Drop for Db {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

/// A fresh database file with the outbox tables.
pub(crate) async fn db() -> Db {
    let db = unmigrated_db().await;
    migrate(&db.pool).await.unwrap();
    db
}

/// A fresh database file without the outbox tables.
#[allow(dead_code)] // not every test file uses it
pub(crate) async fn unmigrated_db() -> Db {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "palisade-outbox-{}-{}.db",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    Db { pool, path }
}
