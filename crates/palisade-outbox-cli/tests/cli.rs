//! The `palisade-outbox` binary against real outbox tables: an SQLite file and a PostgreSQL
//! schema of the test's own (skipped when PostgreSQL is unreachable, unless
//! `PALISADE_REQUIRE_SERVICES=1`).
//!
//! Each case runs on both databases with the same outbox: two dead letters (an order's and a
//! payment's), two archived payment events (one published now, one two minutes ago) and two
//! pending order events, one of them retrying.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use palisade_outbox::postgres::PgStore;
use palisade_outbox::sqlite::SqliteStore;
use palisade_outbox::{BatchReport, ChannelPublisher, Event, Metadata, OutboxStore, Relay, stage};
use palisade_tests::{Postgres, unique_name};
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

const MISSING_TABLES: &str = "palisade-outbox: no outbox tables in this database: run palisade_outbox's migrate, or check the database URL (and, on PostgreSQL, the schema in its search_path): error returned from database: ";
const CHANNEL_CLOSED: &str = "publish failed (transient): the channel's receiver was dropped";

enum Backend {
    Sqlite { pool: SqlitePool, path: PathBuf },
    Postgres(Postgres),
}

struct Fixture {
    backend: Backend,
    url: String,
}

/// What the tool printed, and its exit status.
#[derive(Debug)]
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert_eq!(self.status, 0, "{self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

impl Fixture {
    async fn sqlite(test: &str, migrated: bool) -> Self {
        let path = std::env::temp_dir().join(format!("{}.db", unique_name(test)));
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        if migrated {
            palisade_outbox::sqlite::migrate(&pool).await.unwrap();
        } else {
            sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY)")
                .execute(&pool)
                .await
                .unwrap();
        }
        let url = format!("sqlite:{}", path.display());
        Self {
            backend: Backend::Sqlite { pool, path },
            url,
        }
    }

    async fn postgres(test: &str, migrated: bool) -> Option<Self> {
        let pg = Postgres::connect(test).await?;
        if migrated {
            palisade_outbox::postgres::migrate(&pg.pool).await.unwrap();
        } else {
            sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY)")
                .execute(&pg.pool)
                .await
                .unwrap();
        }
        let url = pg.url_in_schema();
        Some(Self {
            backend: Backend::Postgres(pg),
            url,
        })
    }

    async fn cleanup(self) {
        match self.backend {
            Backend::Sqlite { pool, path } => {
                pool.close().await;
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Backend::Postgres(pg) => pg.cleanup().await,
        }
    }

    /// Runs the tool with `args` on this database.
    async fn cli(&self, args: &[&str]) -> Run {
        self.cli_with(args, Stdio::piped(), Stdio::piped()).await
    }

    /// Runs the tool with `args` on this database, its stdout a pipe no one reads any more: what
    /// `palisade-outbox dead list | head -1` writes to once `head` has exited.
    async fn cli_to_closed_pipe(&self, args: &[&str]) -> Run {
        self.cli_with(args, closed_pipe(), Stdio::piped()).await
    }

    /// Runs the tool with `args` on this database, writing to `stdout` and `stderr` (what they
    /// capture when piped).
    async fn cli_with(&self, args: &[&str], stdout: Stdio, stderr: Stdio) -> Run {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade-outbox"))
            .env_remove("DATABASE_URL")
            .arg("--database-url")
            .arg(&self.url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap()
            .wait_with_output()
            .await
            .unwrap();
        Run {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    async fn stage(&self, event: &Event) {
        match &self.backend {
            Backend::Sqlite { pool, .. } => {
                let mut tx = pool.begin().await.unwrap();
                stage(&mut tx, event).await.unwrap();
                tx.commit().await.unwrap();
            }
            Backend::Postgres(pg) => {
                let mut tx = pg.pool.begin().await.unwrap();
                stage(&mut tx, event).await.unwrap();
                tx.commit().await.unwrap();
            }
        }
    }

    /// One relay batch into `publisher`, failing each event for good when the channel is closed.
    async fn relay(&self, publisher: ChannelPublisher, retention: Duration) -> BatchReport {
        async fn run<S: OutboxStore>(store: S, publisher: ChannelPublisher, retention: Duration) -> BatchReport {
            let relay = Relay::builder(store, publisher)
                .max_attempts(1)
                .retention(retention)
                .build()
                .unwrap();
            relay.run_batch().await.unwrap()
        }
        match &self.backend {
            Backend::Sqlite { pool, .. } => run(SqliteStore::new(pool.clone()), publisher, retention).await,
            Backend::Postgres(pg) => run(PgStore::new(pg.pool.clone()), publisher, retention).await,
        }
    }

    /// Dead-letters every pending event (the publisher's receiver is gone).
    async fn dead_letter_pending(&self) {
        let (publisher, events) = ChannelPublisher::new(16);
        drop(events);
        let report = self.relay(publisher, Duration::ZERO).await;
        assert_eq!(report.dead_lettered, report.claimed);
    }

    /// Publishes every pending event; returns them sorted by event id.
    async fn publish_pending(&self, retention: Duration) -> Vec<Event> {
        let (publisher, mut events) = ChannelPublisher::new(16);
        let report = self.relay(publisher, retention).await;
        assert_eq!(report.published, report.claimed);
        let mut published = Vec::new();
        while let Ok(event) = events.try_recv() {
            published.push(event);
        }
        published.sort_by_key(|e| e.event_id);
        published
    }

    /// Sets a timestamp column of outbox row `seq` (of `palisade_outbox_published` when `published`).
    async fn set_time(&self, table: &str, column: &str, seq: i64, at: OffsetDateTime) {
        let sql = format!("UPDATE {table} SET {column} = $1 WHERE seq = $2");
        let updated = match &self.backend {
            Backend::Sqlite { pool, .. } => {
                let ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap();
                sqlx::query(&sql)
                    .bind(ms)
                    .bind(seq)
                    .execute(pool)
                    .await
                    .unwrap()
                    .rows_affected()
            }
            Backend::Postgres(pg) => sqlx::query(&sql)
                .bind(at)
                .bind(seq)
                .execute(&pg.pool)
                .await
                .unwrap()
                .rows_affected(),
        };
        assert_eq!(updated, 1, "{sql} for {seq}");
    }

    async fn set_attempts(&self, seq: i64, attempts: i32) {
        let sql = "UPDATE palisade_outbox SET attempts = $1 WHERE seq = $2";
        match &self.backend {
            Backend::Sqlite { pool, .. } => {
                sqlx::query(sql).bind(attempts).bind(seq).execute(pool).await.unwrap();
            }
            Backend::Postgres(pg) => {
                sqlx::query(sql)
                    .bind(attempts)
                    .bind(seq)
                    .execute(&pg.pool)
                    .await
                    .unwrap();
            }
        }
    }

    async fn set_last_error(&self, seq: i64, error: &str) {
        let sql = "UPDATE palisade_outbox SET last_error = $1 WHERE seq = $2";
        match &self.backend {
            Backend::Sqlite { pool, .. } => {
                sqlx::query(sql).bind(error).bind(seq).execute(pool).await.unwrap();
            }
            Backend::Postgres(pg) => {
                sqlx::query(sql).bind(error).bind(seq).execute(&pg.pool).await.unwrap();
            }
        }
    }

    /// The tables in the database (the test's schema on PostgreSQL), sorted.
    async fn tables(&self) -> Vec<String> {
        match &self.backend {
            Backend::Sqlite { pool, .. } => {
                sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                    .fetch_all(pool)
                    .await
                    .unwrap()
            }
            Backend::Postgres(pg) => sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
            )
            .bind(&pg.schema)
            .fetch_all(&pg.pool)
            .await
            .unwrap(),
        }
    }
}

/// The write end of a pipe whose read end is closed: every write to it fails with `EPIPE`.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

fn event(n: u128, event_type: &str, aggregate_type: &str, aggregate_id: &str) -> Event {
    let mut event = Event::new(
        event_type,
        aggregate_type,
        aggregate_id,
        json!({ "id": aggregate_id, "total_amount": 5999 }),
    );
    event.event_id = Uuid::from_u128(0x0193f1c2_0000_7000_8000_000000000000 + n);
    event.timestamp = at("2020-02-29T23:58:00Z");
    event.metadata = Metadata {
        correlation_id: Some(format!("corr_{n}")),
        ..Metadata::default()
    };
    event
}

/// The outbox every case starts from; returns its events by staging order (seq 1 to 6) and
/// when the payment's dead letter was made (whole seconds, a day ago).
///
/// | seq | event | state |
/// |---|---|---|
/// | 1 | OrderCreated, Order ord_1 | dead since 2020-03-01 (staged 2020-02-29T23:59:00Z) |
/// | 2 | PaymentFailed, Payment pay_1 | dead since a day ago |
/// | 3 | PaymentCaptured, Payment pay_2 | published now, archived |
/// | 4 | PaymentCaptured, Payment pay_3 | published two minutes ago, archived |
/// | 5 | OrderShipped, Order ord_2 | pending since 2020-01-01 |
/// | 6 | OrderShipped, Order ord_3 | pending since 2020-01-02, 2 failed attempts |
async fn populate(f: &Fixture) -> (Vec<Event>, OffsetDateTime) {
    let events = vec![
        event(1, "OrderCreated", "Order", "ord_1"),
        event(2, "PaymentFailed", "Payment", "pay_1"),
        event(3, "PaymentCaptured", "Payment", "pay_2"),
        event(4, "PaymentCaptured", "Payment", "pay_3"),
        event(5, "OrderShipped", "Order", "ord_2"),
        event(6, "OrderShipped", "Order", "ord_3"),
    ];
    f.stage(&events[0]).await;
    f.stage(&events[1]).await;
    f.dead_letter_pending().await;
    f.stage(&events[2]).await;
    f.stage(&events[3]).await;
    assert_eq!(f.publish_pending(Duration::from_secs(3600)).await, events[2..4]);
    f.stage(&events[4]).await;
    f.stage(&events[5]).await;

    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let day_ago = now - time::Duration::days(1);
    f.set_time("palisade_outbox", "staged_at", 1, at("2020-02-29T23:59:00Z"))
        .await;
    f.set_time("palisade_outbox", "dead_lettered_at", 1, at("2020-03-01T00:00:00Z"))
        .await;
    f.set_time("palisade_outbox", "staged_at", 2, day_ago).await;
    f.set_time("palisade_outbox", "dead_lettered_at", 2, day_ago).await;
    f.set_time(
        "palisade_outbox_published",
        "published_at",
        4,
        now - time::Duration::minutes(2),
    )
    .await;
    f.set_time("palisade_outbox", "staged_at", 5, at("2020-01-01T00:00:00Z"))
        .await;
    f.set_time("palisade_outbox", "staged_at", 6, at("2020-01-02T00:00:00Z"))
        .await;
    f.set_attempts(6, 2).await;
    (events, day_ago)
}

/// Dead letter 1 (the order's) as JSON.
fn order_dead_letter() -> Value {
    json!({
        "seq": 1,
        "event": {
            "event_id": "0193f1c2-0000-7000-8000-000000000001",
            "event_type": "OrderCreated",
            "aggregate_type": "Order",
            "aggregate_id": "ord_1",
            "destination": "Order",
            "timestamp": "2020-02-29T23:58:00Z",
            "version": 1,
            "payload": { "id": "ord_1", "total_amount": 5999 },
            "metadata": { "correlation_id": "corr_1" }
        },
        "attempts": 1,
        "last_error": CHANNEL_CLOSED,
        "staged_at": "2020-02-29T23:59:00Z",
        "dead_lettered_at": "2020-03-01T00:00:00Z"
    })
}

/// Dead letter 2 (the payment's) as JSON.
fn payment_dead_letter(dead_at: OffsetDateTime) -> Value {
    json!({
        "seq": 2,
        "event": {
            "event_id": "0193f1c2-0000-7000-8000-000000000002",
            "event_type": "PaymentFailed",
            "aggregate_type": "Payment",
            "aggregate_id": "pay_1",
            "destination": "Payment",
            "timestamp": "2020-02-29T23:58:00Z",
            "version": 1,
            "payload": { "id": "pay_1", "total_amount": 5999 },
            "metadata": { "correlation_id": "corr_2" }
        },
        "attempts": 1,
        "last_error": CHANNEL_CLOSED,
        "staged_at": rfc3339(dead_at),
        "dead_lettered_at": rfc3339(dead_at)
    })
}

/// The milliseconds since `t`, now.
fn ms_since(t: &str) -> u64 {
    u64::try_from((OffsetDateTime::now_utc() - at(t)).whole_milliseconds()).unwrap()
}

/// Runs `$case` on an SQLite file (`$sqlite`) and a PostgreSQL schema (`$postgres`).
macro_rules! on_both {
    ($case:ident, $migrated:expr, $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let f = Fixture::sqlite(stringify!($sqlite), $migrated).await;
            $case(&f).await;
            f.cleanup().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(f) = Fixture::postgres(stringify!($postgres), $migrated).await else {
                return;
            };
            $case(&f).await;
            f.cleanup().await;
        }
    };
}

on_both!(stats, true, stats_sqlite, stats_postgres);
async fn stats(f: &Fixture) {
    populate(f).await;
    let before = ms_since("2020-01-01T00:00:00Z");
    let mut stats = f.cli(&["--json", "stats"]).await.json();
    let after = ms_since("2020-01-01T00:00:00Z");
    for age in [
        stats["oldest_pending_age_ms"].take(),
        stats["destinations"][0]["oldest_pending_age_ms"].take(),
    ] {
        let age = age.as_u64().unwrap();
        assert!(
            (before - 1_000..=after + 1_000).contains(&age),
            "{age} not in {before}..={after}"
        );
    }
    assert_eq!(
        stats,
        json!({
            "pending": 2, "retrying": 1, "oldest_pending_at": "2020-01-01T00:00:00Z",
            "oldest_pending_age_ms": null, "dead": 2, "published_last_minute": 1,
            "destinations": [
                { "destination": "Order", "pending": 2, "retrying": 1,
                  "oldest_pending_at": "2020-01-01T00:00:00Z", "oldest_pending_age_ms": null,
                  "dead": 1, "published_last_minute": 0 },
                { "destination": "Payment", "pending": 0, "retrying": 0,
                  "oldest_pending_at": null, "oldest_pending_age_ms": null,
                  "dead": 1, "published_last_minute": 1 },
            ]
        })
    );

    let text = f.cli(&["stats"]).await;
    assert_eq!(text.status, 0, "{text:?}");
    // Columns two spaces apart or more; the age reads like `6years 11months 4days 7h 40m 12s`.
    let rows: Vec<Vec<&str>> = text
        .stdout
        .lines()
        .map(|line| line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect())
        .collect();
    let age = |row: &Vec<&str>| row[3].starts_with(&format!("{}years ", after / 1000 / 31_557_600));
    assert_eq!(rows.len(), 4, "{text:?}");
    assert_eq!(
        rows[0],
        [
            "destination",
            "pending",
            "retrying",
            "oldest pending",
            "dead",
            "published last minute"
        ]
    );
    assert_eq!(
        (&rows[1][..3], &rows[1][4..]),
        (&["Order", "2", "1"][..], &["1", "0"][..])
    );
    assert!(age(&rows[1]), "{rows:?}");
    assert_eq!(rows[2], ["Payment", "0", "0", "-", "1", "1"]);
    assert_eq!(
        (&rows[3][..3], &rows[3][4..]),
        (&["(total)", "2", "1"][..], &["2", "1"][..])
    );
    assert!(age(&rows[3]), "{rows:?}");
}

on_both!(dead_list, true, dead_list_sqlite, dead_list_postgres);
async fn dead_list(f: &Fixture) {
    let (_, day_ago) = populate(f).await;
    let both = json!([order_dead_letter(), payment_dead_letter(day_ago)]);
    assert_eq!(f.cli(&["--json", "dead", "list"]).await.json(), both);
    assert_eq!(
        f.cli(&["dead", "list", "--json", "--destination", "Payment"])
            .await
            .json(),
        json!([payment_dead_letter(day_ago)])
    );
    assert_eq!(
        f.cli(&["dead", "list", "--json", "--older-than", "7d"]).await.json(),
        json!([order_dead_letter()])
    );
    assert_eq!(
        f.cli(&["dead", "list", "--json", "--limit", "1"]).await.json(),
        json!([order_dead_letter()])
    );
    assert_eq!(
        f.cli(&["dead", "list", "--json", "--destination", "Shipment"])
            .await
            .json(),
        json!([])
    );
    // Longer ago than any database keeps time: nothing that old, not a failure.
    assert_eq!(
        f.cli(&["dead", "list", "--json", "--older-than", "7000y"]).await.json(),
        json!([])
    );
    assert_eq!(
        f.cli(&["dead", "list", "--json", "--older-than", "500000y"])
            .await
            .json(),
        json!([])
    );

    let text = f.cli(&["dead", "list"]).await;
    assert_eq!(text.status, 0, "{text:?}");
    let day_ago = rfc3339(day_ago);
    let pad = " ".repeat(day_ago.len().saturating_sub(20));
    assert_eq!(
        text.stdout,
        format!(
            "seq  event id                              event type     aggregate      destination  attempts  dead-lettered at{pad}      last error\n\
             1    0193f1c2-0000-7000-8000-000000000001  OrderCreated   Order/ord_1    Order        1         2020-03-01T00:00:00Z{pad}  {CHANNEL_CLOSED}\n\
             2    0193f1c2-0000-7000-8000-000000000002  PaymentFailed  Payment/pay_1  Payment      1         {day_ago}  {CHANNEL_CLOSED}\n"
        )
    );
    assert_eq!(
        f.cli(&["dead", "list", "--destination", "Shipment"]).await.stdout,
        "no dead letters\n"
    );
}

#[tokio::test]
async fn a_list_limit_of_zero_is_refused() {
    let f = Fixture::sqlite("cli_limit_zero", true).await;
    for args in [
        &["dead", "list", "--limit", "0"][..],
        &["--json", "dead", "list", "--limit", "0"],
    ] {
        let run = f.cli(args).await;
        assert_eq!((run.status, run.stdout.as_str()), (2, ""), "{args:?}: {run:?}");
        assert!(
            run.stderr
                .contains("invalid value '0' for '--limit <LIMIT>': must be at least 1"),
            "{args:?}: {run:?}"
        );
    }
    assert_eq!(
        f.cli(&["--json", "dead", "list", "--limit", "1"]).await.json(),
        json!([])
    );
    f.cleanup().await;
}

on_both!(
    control_characters,
    true,
    control_characters_sqlite,
    control_characters_postgres
);
/// Text from outside the tool (a receiver's error body quoted in the last error, an event's
/// type, aggregate, destination, payload and metadata) may hold terminal escape sequences: the
/// text output shows every control character escaped, one line per row, never raw. JSON keeps
/// the text as it is (escaped as JSON).
async fn control_characters(f: &Fixture) {
    let mut dead = event(1, "Created\u{7f}", "Order\u{1b}]0;owned\u{7}", "ord\u{9b}2J");
    dead.destination = "Order\u{1b}[8m".to_owned();
    dead.payload = json!({ "note": "\u{1b}[31m\u{9b}31m" });
    dead.metadata.correlation_id = Some("corr\u{85}".to_owned());
    f.stage(&dead).await;
    f.dead_letter_pending().await;
    let error = "receiver answered 500: \u{1b}[31mdown\u{1b}[0m\nretry later\r\u{9b}2K";
    f.set_last_error(1, error).await;
    assert_eq!(
        f.cli(&["--json", "dead", "show", "1"]).await.json()["last_error"],
        json!(error)
    );
    assert_eq!(
        f.cli(&["--json", "dead", "list"]).await.json()[0]["event"]["destination"],
        json!(dead.destination)
    );

    let raw = |run: &Run| -> Vec<char> {
        let controls = run.stdout.chars().filter(|c| c.is_control() && *c != '\n');
        controls.collect()
    };
    let escaped = r"receiver answered 500: \u{1b}[31mdown\u{1b}[0m\nretry later\r\u{9b}2K";
    let show = f.cli(&["dead", "show", "1"]).await;
    assert_eq!((show.status, raw(&show)), (0, vec![]), "{show:?}");
    for line in [
        r"event type:       Created\u{7f}",
        r"aggregate:        Order\u{1b}]0;owned\u{7}/ord\u{9b}2J",
        r"destination:      Order\u{1b}[8m",
        r#"metadata:         {"correlation_id":"corr\u0085"}"#,
        &format!("last error:       {escaped}"),
        r#"  "note": "\u001b[31m\u009b31m""#,
    ] {
        assert!(show.stdout.lines().any(|l| l == line), "{line}: {show:?}");
    }

    let list = f.cli(&["dead", "list"]).await;
    assert_eq!((list.status, raw(&list)), (0, vec![]), "{list:?}");
    assert_eq!(list.stdout.lines().count(), 2, "a header and one row: {list:?}");
    assert!(list.stdout.contains(escaped), "{list:?}");
    let stats = f.cli(&["stats"]).await;
    assert_eq!((stats.status, raw(&stats)), (0, vec![]), "{stats:?}");
    assert!(stats.stdout.contains(r"Order\u{1b}[8m  "), "{stats:?}");
}

on_both!(dead_show, true, dead_show_sqlite, dead_show_postgres);
async fn dead_show(f: &Fixture) {
    populate(f).await;
    assert_eq!(
        f.cli(&["--json", "dead", "show", "1"]).await.json(),
        order_dead_letter()
    );
    assert_eq!(
        f.cli(&["--json", "dead", "show", "0193f1c2-0000-7000-8000-000000000001"])
            .await
            .json(),
        order_dead_letter(),
        "by event id"
    );
    let text = f.cli(&["dead", "show", "1"]).await;
    assert_eq!(text.status, 0, "{text:?}");
    assert_eq!(
        text.stdout,
        format!(
            "seq:              1\n\
             event id:         0193f1c2-0000-7000-8000-000000000001\n\
             event type:       OrderCreated\n\
             aggregate:        Order/ord_1\n\
             version:          1\n\
             destination:      Order\n\
             occurred at:      2020-02-29T23:58:00Z\n\
             metadata:         {{\"correlation_id\":\"corr_1\"}}\n\
             attempts:         1\n\
             staged at:        2020-02-29T23:59:00Z\n\
             dead-lettered at: 2020-03-01T00:00:00Z\n\
             last error:       {CHANNEL_CLOSED}\n\
             payload:\n\
             {{\n  \"id\": \"ord_1\",\n  \"total_amount\": 5999\n}}\n"
        )
    );

    // A pending event, a published one and no row at all are no dead letters.
    for id in ["5", "3", "99", "0193f1c2-0000-7000-8000-000000000005"] {
        let run = f.cli(&["dead", "show", id]).await;
        assert_eq!(
            (run.status, run.stdout.as_str(), run.stderr.as_str()),
            (
                1,
                "",
                format!("palisade-outbox: no dead letter with id {id}\n").as_str()
            )
        );
    }
    let run = f.cli(&["dead", "show", "ord_1"]).await;
    assert_eq!(run.status, 2, "{run:?}");
    assert!(
        run.stderr
            .contains(r#""ord_1" is neither a sequence number nor an event id (UUID)"#),
        "{run:?}"
    );
}

on_both!(dead_requeue, true, dead_requeue_sqlite, dead_requeue_postgres);
async fn dead_requeue(f: &Fixture) {
    let (events, _) = populate(f).await;
    assert_eq!(
        f.cli(&["--json", "dead", "requeue", "1"]).await.json(),
        json!({ "requeued": 1 })
    );
    let stats = f.cli(&["--json", "stats"]).await.json();
    assert_eq!(
        (&stats["pending"], &stats["dead"], &stats["destinations"][0]["pending"]),
        (&json!(3), &json!(1), &json!(3))
    );
    assert_eq!(f.cli(&["--json", "dead", "list"]).await.json()[0]["seq"], json!(2));
    // The relay publishes it (with the other pending events) at its next claim.
    assert_eq!(
        f.publish_pending(Duration::ZERO).await,
        vec![events[0].clone(), events[4].clone(), events[5].clone()]
    );

    let again = f.cli(&["dead", "requeue", "1"]).await;
    assert_eq!(
        (again.status, again.stderr.as_str()),
        (1, "palisade-outbox: no dead letter with id 1\n")
    );
    let text = f
        .cli(&["dead", "requeue", "0193f1c2-0000-7000-8000-000000000002"])
        .await;
    assert_eq!(
        (text.status, text.stdout.as_str()),
        (0, "requeued dead letter 0193f1c2-0000-7000-8000-000000000002\n")
    );
}

on_both!(
    dead_requeue_all,
    true,
    dead_requeue_all_sqlite,
    dead_requeue_all_postgres
);
async fn dead_requeue_all(f: &Fixture) {
    let (events, _) = populate(f).await;
    let refused = f.cli(&["dead", "requeue", "--all"]).await;
    assert_eq!(
        (refused.status, refused.stdout.as_str(), refused.stderr.as_str()),
        (
            2,
            "",
            "palisade-outbox: would requeue 2 dead letters; nothing done: add --yes to requeue them\n"
        )
    );
    let refused = f
        .cli(&["--json", "dead", "requeue", "--all", "--destination", "Order"])
        .await;
    assert_eq!(
        (refused.status, refused.stdout.as_str(), refused.stderr.as_str()),
        (
            2,
            "",
            "palisade-outbox: would requeue 1 dead letter for destination \"Order\"; nothing done: add --yes to requeue them\n"
        )
    );
    // A filter or --yes belongs to --all; with an id they are refused before anything runs.
    for args in [
        &["dead", "requeue", "1", "--destination", "Order"][..],
        &["dead", "requeue", "1", "--older-than", "1d"],
        &["dead", "requeue", "1", "--yes"],
        &["dead", "requeue", "1", "--all", "--yes"],
        &["dead", "requeue"],
    ] {
        let run = f.cli(args).await;
        assert_eq!((run.status, run.stdout.as_str()), (2, ""), "{args:?}: {run:?}");
    }
    assert_eq!(
        f.cli(&["--json", "stats"]).await.json()["dead"],
        json!(2),
        "nothing changed"
    );

    assert_eq!(
        f.cli(&["--json", "dead", "requeue", "--all", "--destination", "Order", "--yes"])
            .await
            .json(),
        json!({ "requeued": 1 })
    );
    assert_eq!(
        f.cli(&["--json", "dead", "list"]).await.json()[0]["seq"],
        json!(2),
        "the payment's dead letter stays"
    );
    let text = f
        .cli(&["dead", "requeue", "--all", "--older-than", "1h", "--yes"])
        .await;
    assert_eq!(
        (text.status, text.stdout.as_str()),
        (0, "requeued 1 dead letter dead-lettered more than 1h ago\n")
    );
    assert_eq!(f.cli(&["--json", "stats"]).await.json()["dead"], json!(0));
    assert_eq!(
        f.publish_pending(Duration::ZERO).await,
        vec![
            events[0].clone(),
            events[1].clone(),
            events[4].clone(),
            events[5].clone()
        ]
    );
    let none = f.cli(&["--json", "dead", "requeue", "--all", "--yes"]).await;
    assert_eq!(none.json(), json!({ "requeued": 0 }));
}

on_both!(dead_purge, true, dead_purge_sqlite, dead_purge_postgres);
async fn dead_purge(f: &Fixture) {
    let (_, day_ago) = populate(f).await;
    let refused = f.cli(&["dead", "purge", "--older-than", "7d"]).await;
    assert_eq!(
        (refused.status, refused.stdout.as_str(), refused.stderr.as_str()),
        (
            2,
            "",
            "palisade-outbox: would delete 1 dead letter dead-lettered more than 7days ago; nothing done: add --yes to delete them\n"
        )
    );
    assert_eq!(
        f.cli(&["--json", "stats"]).await.json()["dead"],
        json!(2),
        "nothing deleted"
    );

    assert_eq!(
        f.cli(&["--json", "dead", "purge", "--older-than", "7d", "--yes"])
            .await
            .json(),
        json!({ "purged": 1 })
    );
    assert_eq!(
        f.cli(&["--json", "dead", "list"]).await.json(),
        json!([payment_dead_letter(day_ago)]),
        "only the one older than 7 days is gone"
    );
    let stats = f.cli(&["--json", "stats"]).await.json();
    assert_eq!(
        (&stats["pending"], &stats["dead"]),
        (&json!(2), &json!(1)),
        "pending events stay"
    );

    let text = f
        .cli(&[
            "dead",
            "purge",
            "--older-than",
            "12h",
            "--destination",
            "Order",
            "--yes",
        ])
        .await;
    assert_eq!(
        (text.status, text.stdout.as_str()),
        (
            0,
            "deleted 0 dead letters for destination \"Order\" dead-lettered more than 12h ago\n"
        )
    );
    let run = f.cli(&["dead", "purge", "--yes"]).await;
    assert_eq!(run.status, 2, "--older-than is required: {run:?}");
    assert!(run.stderr.contains("--older-than <OLDER_THAN>"), "{run:?}");
}

on_both!(missing_tables, false, missing_tables_sqlite, missing_tables_postgres);
async fn missing_tables(f: &Fixture) {
    for args in [
        &["stats"][..],
        &["dead", "list"],
        &["dead", "show", "1"],
        &["dead", "requeue", "1"],
        &["dead", "requeue", "--all", "--yes"],
        &["dead", "purge", "--older-than", "1d", "--yes"],
        &["--json", "stats"],
    ] {
        let run = f.cli(args).await;
        assert_eq!((run.status, run.stdout.as_str()), (1, ""), "{args:?}: {run:?}");
        assert!(run.stderr.starts_with(MISSING_TABLES), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    }
    assert_eq!(f.tables().await, ["orders"], "nothing was created");
}

#[tokio::test]
async fn the_database_comes_from_database_url_or_the_flag_and_must_exist() {
    let f = Fixture::sqlite("cli_env", true).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade-outbox"))
        .env("DATABASE_URL", &f.url)
        .args(["dead", "list", "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        (output.status.code(), output.stdout.as_slice()),
        (Some(0), &b"[]\n"[..])
    );

    let none = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade-outbox"))
        .env_remove("DATABASE_URL")
        .args(["stats"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        (none.status.code(), String::from_utf8_lossy(&none.stderr).as_ref()),
        (
            Some(2),
            "palisade-outbox: no database: pass --database-url or set DATABASE_URL\n"
        )
    );

    let path = std::env::temp_dir().join(format!("{}.db", unique_name("cli_no_file")));
    let missing = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade-outbox"))
        .args(["--database-url", &format!("sqlite:{}", path.display()), "stats"])
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).starts_with(
            "palisade-outbox: cannot open the database (an SQLite file must exist; this tool never creates one): "
        ),
        "{missing:?}"
    );
    assert!(!path.exists(), "no file was created");

    let scheme = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade-outbox"))
        .args(["--database-url", "mysql://db/orders", "stats"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        (scheme.status.code(), String::from_utf8_lossy(&scheme.stderr).as_ref()),
        (
            Some(2),
            "palisade-outbox: the database URL must start with postgres://, postgresql:// or sqlite:\n"
        )
    );
    f.cleanup().await;
}

on_both!(unreadable_row, true, unreadable_row_sqlite, unreadable_row_postgres);
/// A row staged around `stage` whose metadata is not palisade's: dead-lettered as unreadable,
/// shown without an event, requeued by its sequence number.
async fn unreadable_row(f: &Fixture) {
    populate(f).await;
    let insert = "INSERT INTO palisade_outbox
        (event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version, payload, metadata)
        VALUES ('0193f1c2-0000-7000-8000-000000000007', 'Broken', 'Order', 'ord_9', 'Order',
                '2020-02-29T23:58:00Z', 1, '{}', '\"not metadata\"')";
    match &f.backend {
        Backend::Sqlite { pool, .. } => sqlx::query(insert).execute(pool).await.unwrap().rows_affected(),
        Backend::Postgres(pg) => sqlx::query(insert).execute(&pg.pool).await.unwrap().rows_affected(),
    };
    let (publisher, _events) = ChannelPublisher::new(16);
    let report = f.relay(publisher, Duration::ZERO).await;
    assert_eq!((report.published, report.dead_lettered), (2, 1));

    let mut shown = f.cli(&["--json", "dead", "show", "7"]).await.json();
    let error = shown["last_error"].take();
    assert!(
        error
            .as_str()
            .unwrap()
            .starts_with(r#"outbox row 7 is malformed: metadata: invalid type: string "not metadata""#),
        "{error}"
    );
    for time in ["staged_at", "dead_lettered_at"] {
        let text = shown[time].take();
        let t = at(text.as_str().unwrap());
        assert!(
            (OffsetDateTime::now_utc() - t).abs() < time::Duration::minutes(1),
            "{time}: {text}"
        );
    }
    assert_eq!(
        shown,
        json!({ "seq": 7, "event": null, "attempts": 1, "last_error": null,
                "staged_at": null, "dead_lettered_at": null })
    );

    let text = f.cli(&["dead", "show", "7"]).await;
    assert!(
        text.stdout
            .starts_with("seq:              7\nevent:            (the row cannot be read back as an event; see the last error)\nattempts:         1\n"),
        "{text:?}"
    );
    let list = f.cli(&["dead", "list", "--destination", "Order"]).await;
    let row = list.stdout.lines().nth(2).unwrap();
    assert!(row.starts_with("7    (unreadable row)  "), "{list:?}");
    assert_eq!(
        f.cli(&["--json", "dead", "requeue", "7"]).await.json(),
        json!({ "requeued": 1 })
    );
    assert_eq!(f.cli(&["--json", "stats"]).await.json()["dead"], json!(2));
}

on_both!(closed_pipe_case, true, closed_pipe_sqlite, closed_pipe_postgres);
/// A reader that stops early (`palisade-outbox dead list | head -1`) closes the pipe the tool
/// writes to: the command is done all the same (a change included), so the tool stops quietly
/// with status 0, as `head`'s other writers do. Nor does a closed stderr change the status.
async fn closed_pipe_case(f: &Fixture) {
    populate(f).await;
    for args in [
        &["stats"][..],
        &["--json", "stats"],
        &["dead", "list"],
        &["--json", "dead", "list"],
        &["dead", "show", "1"],
        &["--json", "dead", "show", "2"],
        &["--help"],
    ] {
        let run = f.cli_to_closed_pipe(args).await;
        assert_eq!((run.status, run.stderr.as_str()), (0, ""), "{args:?}: {run:?}");
    }
    assert_eq!(
        f.cli(&["--json", "stats"]).await.json()["dead"],
        json!(2),
        "nothing changed"
    );

    for args in [
        &["dead", "requeue", "1"][..],
        &[
            "--json",
            "dead",
            "requeue",
            "--all",
            "--destination",
            "Payment",
            "--yes",
        ],
    ] {
        let run = f.cli_to_closed_pipe(args).await;
        assert_eq!((run.status, run.stderr.as_str()), (0, ""), "{args:?}: {run:?}");
    }
    let stats = f.cli(&["--json", "stats"]).await.json();
    assert_eq!(
        (&stats["pending"], &stats["dead"]),
        (&json!(4), &json!(0)),
        "both dead letters requeued"
    );
    f.dead_letter_pending().await;
    f.set_time("palisade_outbox", "dead_lettered_at", 1, at("2020-03-01T00:00:00Z"))
        .await;
    let dead = f.cli(&["--json", "stats"]).await.json()["dead"].as_u64().unwrap();
    let run = f
        .cli_to_closed_pipe(&["dead", "purge", "--older-than", "7d", "--yes"])
        .await;
    assert_eq!((run.status, run.stderr.as_str()), (0, ""), "{run:?}");
    assert_eq!(
        f.cli(&["--json", "stats"]).await.json()["dead"],
        json!(dead - 1),
        "the old one purged"
    );

    // A failure whose message cannot be written still exits with its status.
    let run = f.cli_with(&["dead", "show", "99"], Stdio::piped(), closed_pipe()).await;
    assert_eq!((run.status, run.stdout.as_str()), (1, ""), "{run:?}");
}

on_both!(
    unwritable_output,
    true,
    unwritable_output_sqlite,
    unwritable_output_postgres
);
/// Any other failure to write the output (here a full disk: Linux's /dev/full) is a failure,
/// status 1, its message saying what a change did all the same.
async fn unwritable_output(f: &Fixture) {
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full");
    if full().is_err() {
        palisade_tests::skip("no /dev/full");
        return;
    }
    populate(f).await;
    const FULL: &str = "cannot write the output: No space left on device (os error 28)";
    for args in [&["dead", "list"][..], &["--json", "stats"]] {
        let run = f.cli_with(args, full().unwrap().into(), Stdio::piped()).await;
        assert_eq!(
            (run.status, run.stderr.as_str()),
            (1, format!("palisade-outbox: {FULL}\n").as_str()),
            "{args:?}"
        );
    }
    let run = f
        .cli_with(
            &["--json", "dead", "requeue", "--all", "--destination", "Order", "--yes"],
            full().unwrap().into(),
            Stdio::piped(),
        )
        .await;
    assert_eq!(
        (run.status, run.stderr.as_str()),
        (
            1,
            format!("palisade-outbox: requeued 1 dead letter for destination \"Order\", but {FULL}\n").as_str()
        )
    );
    assert_eq!(f.cli(&["--json", "stats"]).await.json()["dead"], json!(1), "requeued");
}
