//! A transactional outbox for tower services: events written in the same database
//! transaction as the business change, published by a background relay, and a publish-hook
//! layer that wakes the relay as soon as a response is produced.
//!
//! A handler [`stage`](stage())s an [`Event`] through its own sqlx transaction (PostgreSQL or SQLite).
//! Nothing is published unless that transaction commits, and nothing committed is lost when
//! the broker or the process fails: the [`Relay`] claims committed events in batches,
//! publishes them through a [`Publisher`] (NATS JetStream, RabbitMQ, Kafka, Redis Streams, signed
//! HTTP webhooks or an in-process channel), and only then deletes them. Delivery is at least once, with the event
//! id as the broker's de-duplication id; consumers apply each event once with [`process_once`].
//!
//! # Install
//!
//! Through the facade, which re-exports this crate as `palisade::outbox`:
//!
//! ```sh
//! cargo add palisade --features outbox-postgres,outbox-nats
//! ```
//!
//! or on its own, where the features have the backends' names: `cargo add
//! palisade-outbox --features postgres,nats`. `outbox` alone brings the publish
//! hook, the relay and the in-process channel publisher, without a database
//! driver; add a store (`outbox-postgres`, `outbox-sqlite`) and a publisher
//! (`outbox-nats`, `outbox-rabbitmq`, `outbox-redis`, `outbox-http`).
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "sqlite")] mod example {
//! use std::time::Duration;
//! use palisade_outbox::{ChannelPublisher, Event, Relay, sqlite::{SqliteStore, migrate}, stage};
//! use serde_json::json;
//!
//! # pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
//! migrate(&pool).await?;
//!
//! // The relay, publishing into a channel (use NatsPublisher, RabbitMqPublisher, ... in production).
//! let (publisher, mut events) = ChannelPublisher::new(64);
//! let relay = Relay::builder(SqliteStore::new(pool.clone()), publisher)
//!     .poll_interval(Duration::from_secs(1))
//!     .build()?;
//! let running = relay.spawn();
//!
//! // In a handler: the business write and its event commit together.
//! let mut tx = pool.begin().await?;
//! // sqlx::query("INSERT INTO orders ...").execute(&mut *tx).await?;
//! let event = Event::new("OrderCreated", "Order", "ord_123", json!({ "total_amount": 5999 }));
//! stage(&mut tx, &event).await?;
//! tx.commit().await?;
//! relay.wakeup().wake(); // what PublishHookLayer does after every POST, PUT, PATCH or DELETE
//!
//! assert_eq!(events.recv().await.unwrap(), event);
//! running.shutdown().await; // finishes the batch in flight
//! # Ok(())
//! # }
//! # }
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> { example::main().await }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! In a server, put [`PublishHookLayer`] around the routes that stage events and take the
//! request's [`OutboxContext`] from the extensions (axum: `Extension<OutboxContext>`), so the
//! events carry the request's correlation id, causation id and trace context:
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")] mod example {
//! use axum::{Extension, Router, extract::State, http::StatusCode, routing::post};
//! use palisade_outbox::{ChannelPublisher, OutboxContext, PublishHookLayer, Relay, sqlite::SqliteStore, stage};
//! use serde_json::json;
//! use sqlx::SqlitePool;
//!
//! async fn create_order(Extension(ctx): Extension<OutboxContext>, State(db): State<SqlitePool>) -> StatusCode {
//!     let Ok(mut tx) = db.begin().await else { return StatusCode::SERVICE_UNAVAILABLE };
//!     // ... insert the order ...
//!     let event = ctx.event("OrderCreated", "Order", "ord_123", json!({}));
//!     if stage(&mut tx, &event).await.is_err() || tx.commit().await.is_err() {
//!         return StatusCode::SERVICE_UNAVAILABLE;
//!     }
//!     StatusCode::CREATED
//! }
//!
//! fn app(db: SqlitePool, relay: &Relay<SqliteStore, ChannelPublisher>) -> Router {
//!     Router::new()
//!         .route("/orders", post(create_order))
//!         .layer(PublishHookLayer::new(relay.wakeup()).source("order-service"))
//!         .with_state(db)
//! }
//! # }
//! ```
//!
//! # The parts
//!
//! | part | what it is | needs a database feature |
//! |---|---|---|
//! | the hook | [`PublishHookLayer`], its service [`PublishHook`] and [`future`], [`OutboxContext`] and [`context`], [`Wakeup`] | no |
//! | the event | [`Event`], [`Metadata`], CloudEvents encoding | no |
//! | the relay | [`Relay`], its builder and handle | no |
//! | the stores | the [`OutboxStore`] trait the relay claims from; [`stage`](stage()) and [`inbox`]; the [`postgres`] and [`sqlite`] stores; the operator's [`OutboxAdmin`] | `postgres`, `sqlite` |
//! | the publishers | the [`Publisher`] trait, [`ChannelPublisher`], the broker publishers | no (each broker has its feature) |
//! | the admin routes | [`admin::AdminRouter`], the operator's routes | `admin` |
//!
//! Every type has one path: the crate root, or one of the modules [`future`], [`context`],
//! [`stage`](mod@stage), [`inbox`], [`postgres`] and [`sqlite`]
//! (`palisade_outbox::postgres::PgStore`).
//!
//! # The event
//!
//! [`Event`] follows the event message of the messaging patterns: `event_id` (UUIDv7, so ids
//! sort by time), `event_type`, `aggregate_type`, `aggregate_id`, `timestamp`, `version`, a
//! JSON `payload`, and [`Metadata`] with correlation id, causation id, source and W3C trace
//! context. Its `destination` (NATS subject, RabbitMQ routing key, Redis stream, under the
//! publisher's prefix) is the aggregate type unless set per event. Publishers send the envelope
//! as JSON by default, or CloudEvents 1.0 structured mode ([`Encoding::CloudEvents`],
//! [`Event::to_cloud_event`]).
//!
//! [`stage`](stage()) refuses, with [`OutboxError::PayloadTooDeep`] and before writing
//! anything, an event the relay could not read back: a payload whose arrays and objects nest
//! deeper than [`MAX_PAYLOAD_DEPTH`] (126) levels. serde_json, which reads the payload back
//! from the database and which most consumers decode the envelope with, stops at 128 levels.
//!
//! # Databases
//!
//! [`postgres::migrate`] / [`sqlite::migrate`] create the tables (`palisade_outbox`,
//! `palisade_outbox_published`, `palisade_inbox`, in the connection's schema); call one on
//! every start, it applies only what is missing. The SQL ships in the crate's `migrations/`.
//!
//! - **PostgreSQL** (feature `postgres`): any number of relays, in threads or instances, may
//!   share one database. A relay claims a batch with `FOR UPDATE SKIP LOCKED` inside a
//!   transaction it holds while publishing, so a crashed or aborted relay frees its events with
//!   its connection, and no lease can run out under a slow broker. The claim checks per
//!   aggregate that no older pending event is held elsewhere. So another relay drains faster
//!   only where batches do not hold each other back, and with CPU to spare: a batch holds its
//!   aggregates' later events until it commits, so over a few busy aggregates the next claim
//!   waits for that commit; over many aggregates relays work side by side, as far as the
//!   database, the broker and their own cores allow (on a 2-core machine that also ran
//!   PostgreSQL and NATS, a second relay added nothing either way; figures in the benchmark
//!   report).
//! - **SQLite** (feature `sqlite`, the embedded choice): one writer at a time, so
//!   a relay stamps a lease on the rows it claims instead of holding a transaction; a relay
//!   that dies leaves them until the lease (30 s) expires.
//!
//! Two findings from measuring the relay shaped the PostgreSQL design: deleting published rows
//! (or moving them to `palisade_outbox_published`) drained about twice as fast as updating a
//! `published_at` column that a partial index's condition depends on, so published rows never
//! stay in the outbox table; and a claim planned on the statistics of the moment can keep a
//! plan that reads far more than it needs once the table has grown (a sequential scan planned
//! on an empty table cost 1.2 ms per poll at 20k rows; an order check planned after a vacuum
//! walked every aggregate's events), so the claim's plan is made with sequential scans, bitmap
//! scans and sorts off, which leaves every step one plan whatever the statistics (see
//! [`postgres`]).
//! The relay's own transaction commits with `synchronous_commit = off`: losing it in a
//! database crash only means publishing those events again, which delivery allows.
//!
//! # Relay semantics
//!
//! - **Order**: events of one aggregate are published in staging order. An aggregate whose
//!   oldest pending event is claimed by another relay or waiting for a retry is skipped, never
//!   overtaken; within a batch, one aggregate's events go to the publisher as one run in
//!   staging order, and different aggregates' runs are published concurrently (up to
//!   `concurrency`). The NATS, RabbitMQ and Redis publishers pipeline a run (send it all, then
//!   read the acknowledgements in order), the Kafka publisher sends it as one record batch; the
//!   others publish it one event at a time. A failure
//!   in a run publishes the events acknowledged before it, fails that one, and releases the
//!   rest; see [`Publisher`] for what a pipelined run may have sent by then. Order is staging
//!   order: concurrent transactions writing the same aggregate should be serialized by the
//!   aggregate's own row lock, as they normally are. Several relays give availability, and
//!   throughput only across aggregates.
//! - **Retries**: a failed publish is retried after an exponential backoff with jitter; the
//!   aggregate's later events wait. After `max_attempts` (or at once for a
//!   [permanent](PublishError::permanent) error) the event is dead-lettered with its last
//!   error, stops blocking its aggregate, and shows in [`OutboxStore::dead_letters`] (and the
//!   `palisade-outbox` tool's `dead list`) until [`OutboxStore::requeue`] (or `dead requeue`)
//!   puts it back in line; see [Operating the outbox](#operating-the-outbox).
//! - **Rows that cannot be read**: a claim reads each row on its own. A row that cannot be
//!   read back as an event (written around [`stage`](stage()), e.g. by a hand-written
//!   `INSERT` with a payload nested deeper than the decoder reads, or metadata that is not
//!   palisade's) is dead-lettered at once with the reason (`outbox row 12 is malformed:
//!   payload: recursion limit exceeded at line 1 column 128`), counted like any dead letter,
//!   and the rest of the batch, its own aggregate's later events included, is published. Its
//!   [`DeadLetter`] has no event (`event: None`) and names the row by `seq`.
//! - **Wake-ups**: an idle relay claims again when woken ([`Wakeup`], which the hook fires) or
//!   after `poll_interval`, the safety net; a relay whose last batch was not empty claims
//!   again 10 ms later, so under a steady stream polling costs a full interval only for the
//!   first event after a quiet spell. On PostgreSQL, run
//!   [`postgres::forward_wakeups`] to turn local wake-ups into `NOTIFY` and
//!   [`postgres::wake_on_notify`] in every instance so relays elsewhere wake too.
//! - **A stalled database**: every store operation the relay awaits (the claim, recording a
//!   batch while it is published and at its end, the backlog count, the purge) gets at most
//!   `store_timeout`. One that takes longer is given up like a failed one: the batch fails
//!   with [`OutboxError::Timeout`] (logged as `outbox batch failed`, `outbox store operation
//!   claim timed out after 10s`), the connection it ran on is closed rather than given back to
//!   the pool in an unknown state, and the relay claims again at its next poll. Events of a
//!   given-up claim are freed when the database ends that connection's transaction
//!   (PostgreSQL; set `idle_in_transaction_session_timeout` on the relay's role for a network
//!   that stalls without closing, above the `lease`: the relay's transaction stays open and
//!   idle while its batch is published, up to the lease, and a session ended under it loses
//!   the batch's record, attempts and dead letters included, so the batch is published again
//!   at the next poll with no backoff) or when the lease expires (SQLite); a given-up record
//!   of a published batch publishes it again (at least once).
//! - **Shutdown**: [`RelayHandle::shutdown`] (or the future given to [`Relay::run`]) stops the
//!   relay after the batch in flight is published and recorded.
//! - **Retention**: published events are deleted at once unless a `retention` is set; then they
//!   are moved to `palisade_outbox_published` and purged every `cleanup_interval`.
//!
//! | setting | default | why |
//! |---|---|---|
//! | `batch_size` | 100 | one round trip claims enough to keep a broker busy; 1000 drains backlogs faster |
//! | `workers` | 2 | one loop claims new commits while the other publishes, so a commit never waits behind a whole batch |
//! | `concurrency` | 64 | aggregates published at once: hides broker round trips without flooding it |
//! | `poll_interval` | 1 s | the safety net only; wake-ups carry the normal path |
//! | `max_attempts` | 10 | with the backoff below, 2 to 4 minutes of trying before a human looks |
//! | `backoff` | 500 ms × 2ⁿ, capped at 5 min, equal jitter | rides out broker restarts without hammering them |
//! | `publish_timeout` | 10 s | a hung broker fails the attempt instead of stalling the batch |
//! | `lease` | 30 s | SQLite claims; must exceed twice the publish timeout |
//! | `store_timeout` | a third of the lease (10 s) | a stalled database connection fails one store operation instead of stalling the relay; must be shorter than the lease |
//! | `retention` | 0 | deleting on publish is the fastest drain; set it to keep an audit trail |
//! | `cleanup_interval` | 60 s | purging is cheap and not urgent |
//! | `backlog_interval` | 10 s | the backlog gauges need a count over the table |
//!
//! # Publishers
//!
//! Every publisher side by side: when the relay counts an event as published, how it sends
//! one aggregate's run, the order a consumer sees, and what it does with a redelivery.
//! Delivery is at least once everywhere: a publish whose acknowledgement was lost is made
//! again.
//!
//! | publisher | feature | published once | a run | order a consumer sees | a redelivered event |
//! |---|---|---|---|---|---|
//! | [`NatsPublisher`] | `nats` | the JetStream stream acks it (stored, replicated as the stream is) | pipelined: all sent, acks read in order | per subject, in staging order | dropped by JetStream within the stream's duplicate window (`Nats-Msg-Id`) |
//! | [`RabbitMqPublisher`] | `rabbitmq` | the broker confirms it; persistent, `mandatory` (a message no queue takes fails) | pipelined on one channel, confirms read in order | per queue, in staging order | delivered again; consumers de-duplicate on `message_id` |
//! | [`KafkaPublisher`] | `kafka` | every in-sync replica has it (`acks=all`) | one record batch per partition, appended whole or not at all | per partition (key = aggregate id), in staging order | stored again (no idempotent producer); consumers de-duplicate on the `event_id` header |
//! | [`RedisPublisher`] | `redis` | `XADD` replied (as durable as the server's persistence) | one pipeline, replies read in order | per stream, in staging order | appended again; consumers de-duplicate on the `event_id` field |
//! | [`HttpPublisher`] | `http` | the receiver answers 2xx (408, 429, 5xx and transport errors are retried, other statuses dead-lettered at once) | one request at a time, each after the previous answer | per aggregate, in staging order | sent again with the same signed `webhook-id`; a receiver with replay protection drops it |
//! | [`ChannelPublisher`] | — | the channel took it | one at a time | in staging order | sent again |
//!
//! A pipelined run or a batch that fails part-way releases the events after the failed one;
//! what a broker may already hold by then is spelled out on [`Publisher`]. In every case an
//! aggregate's later events are not claimed again until its earlier one is published or
//! dead-lettered, and the publishers that send one event at a time keep that order exactly.
//! A pipelined run may already have sent later events past the failed one, which can then
//! reach consumers before it: after a per-message rejection (RabbitMQ, NATS), or when the
//! NATS client reconnects in the middle of a run (it drops what it had buffered for the old
//! connection and sends the publishes still queued on the new one). A consumer that needs
//! an aggregate's order exactly goes by the event's `version`, which the application sets.
//!
//! Every publisher also carries the trace context (`traceparent`, `tracestate`) and the
//! correlation id in the broker's own headers, and can send CloudEvents in structured or
//! binary mode ([`Encoding`]); see [trace context on the wire](#trace-context-on-the-wire).
//!
//! ## Trace context on the wire
//!
//! Every publisher puts the event's trace context and correlation id in the broker's own
//! headers, whatever the [`Encoding`], so a consumer continues the trace
//! (an OpenTelemetry propagator reads `traceparent` from the headers) without decoding the body:
//!
//! | publisher | trace context | correlation id | CloudEvents binary mode attributes |
//! |---|---|---|---|
//! | NATS | `traceparent`, `tracestate` headers | `X-Correlation-ID` header | `ce-` headers |
//! | RabbitMQ | `traceparent`, `tracestate` headers | `correlation_id` property | `cloudEvents_` headers |
//! | Kafka | `traceparent`, `tracestate` record headers | `correlation_id` record header | `ce_` record headers |
//! | Redis | `traceparent`, `tracestate` fields | `correlation_id` field | `ce_` fields |
//! | HTTP | `traceparent`, `tracestate` headers | `X-Correlation-ID` header | `ce-` headers, percent-encoded |
//!
//! [`Encoding::CloudEvents`] is structured mode: the whole
//! CloudEvent is the body, for consumers that read only bodies.
//! [`Encoding::CloudEventsBinary`] is binary mode: the body
//! is the payload, and `specversion`, `id`, `source`, `type`, `subject` (the aggregate id),
//! `time`, and the extensions `aggregatetype`, `aggregateversion`, `correlationid`,
//! `causationid`, `traceparent` and `tracestate` are headers under the protocol binding's prefix,
//! with the content type in the broker's content-type header, so a CloudEvents SDK reads the
//! message as an event. Redis has no binding; its fields follow Kafka's.
//!
//! **An event's own data never breaks a connection.** Each publisher checks the fields its
//! protocol bounds before sending anything; a field it must send that does not fit is a
//! permanent error for that event only (dead-lettered, `the event's routing key cannot be
//! sent: ...`), and an optional one that does not fit is left out with a warning:
//!
//! | publisher | refused (the event is dead-lettered) | left out with a warning |
//! |---|---|---|
//! | RabbitMQ | routing key or event type (`type`) over 255 bytes (AMQP short strings) | `correlation_id` over 255 bytes; an `aggregate_type` or `aggregate_id` header over 1,024 bytes |
//! | NATS | a subject with whitespace or an empty token, or over 3,840 bytes; an event type with CR or LF; headers and body over the server's `max_payload` | a `traceparent`, `tracestate` or correlation id header with CR or LF |
//! | Kafka | a topic that is empty, `.` or `..`, over 249 bytes, or with a character other than ASCII letters, digits, `.`, `_`, `-`; a record over the batch size (1,000,000 bytes by default) | — |
//! | HTTP | a destination that is no http(s) URL; an event type that is no valid header value | — |
//! | Redis | — (commands are binary-safe) | — |
//!
//! RabbitMQ also keeps the trace context and CloudEvents headers within 1,280 bytes, and HTTP
//! leaves out a trace header that is no valid header value; see each publisher.
//!
//! [`OutboxContext`] takes a correlation or request id of at most 255 bytes
//! ([`context::MAX_ID_LEN`]), so the ids a request brings always fit.
//!
//! **Connections come back without a restart.** [`RabbitMqPublisher`]
//! owns its connection and opens a new channel, or a new connection and channel, at the first
//! publish after the broker closed them; [`RedisPublisher::connect`]
//! does the same with its multiplexed connection; the async-nats client and rskafka (under the
//! [`KafkaPublisher`]) reconnect by themselves;
//! the HTTP publisher opens a connection per attempt when the pool has none. The publish in
//! flight when a connection goes fails as transient and the relay retries it.
//! [`Relay::publisher_health`] ([`Publisher::health`]) says whether the publisher reaches its
//! broker right now, for a service's `/health`.
//!
//! The HTTP publisher POSTs each event to its destination (an absolute `http://` URL, or a
//! path joined to the publisher's base URL), signed by a palisade-webhook
//! [`Signer`](palisade_webhook::Signer) so the receiver's `VerifyLayer` (or any Standard
//! Webhooks library) checks it; every attempt is signed afresh under the event id, so a
//! receiver with replay protection drops redeliveries. It uses hyper's pooled HTTP/1.1 client
//! over plain TCP, bounded by its own timeout (5 s); `https` destinations need a TLS connector
//! given to its builder, or a TLS-terminating proxy.
//!
//! # Operating the outbox
//!
//! An operator needs to see the backlog and to deal with dead letters: read why an event
//! failed, put it back in line once the cause is fixed, delete the ones nobody will replay.
//! The operations live once, in [`OutboxAdmin`] (implemented by [`postgres::PgStore`] and
//! [`sqlite::SqliteStore`]), and reach operators three ways:
//!
//! - the **`palisade-outbox` tool** (`cargo install palisade-outbox-cli`), against the
//!   database itself;
//! - the **admin router** ([`admin::AdminRouter`], feature `admin`), an axum router to mount
//!   on a service's admin port, read-only unless requeueing or purging is allowed in its
//!   builder;
//! - the [`OutboxAdmin`] methods, from the service's own code.
//!
//! ```text
//! $ export DATABASE_URL=postgres://app@db/orders   # a schema: ?options=-c%20search_path%3Dorders; or sqlite:orders.db
//! $ palisade-outbox stats
//! destination  pending  retrying  oldest pending  dead  published last minute
//! Order        2        1         3m 12s          1     0
//! Payment      0        0         -               1     14
//! (total)      2        1         3m 12s          2     14
//! $ palisade-outbox dead list --destination Payment
//! seq  event id                              event type     aggregate      destination  attempts  dead-lettered at      last error
//! 2    0193f1c2-8c4e-7b8a-9d3e-2f1a5b6c7d8e  PaymentFailed  Payment/pay_1  Payment      10        2026-11-21T10:30:05Z  publish failed (transient): ...
//! $ palisade-outbox dead show 2          # its sequence number or its event id: payload, metadata, error, timestamps
//! $ palisade-outbox --json dead show 2
//! {"seq":2,"event":{"event_id":"0193f1c2-...","event_type":"PaymentFailed",...},"attempts":10,"last_error":"...","staged_at":"2026-11-21T10:27:51.304Z","dead_lettered_at":"2026-11-21T10:30:05Z"}
//! $ palisade-outbox dead requeue 2
//! requeued dead letter 2
//! $ palisade-outbox dead requeue --all --destination Payment
//! palisade-outbox: would requeue 3 dead letters for destination "Payment"; nothing done: add --yes to requeue them
//! $ palisade-outbox dead requeue --all --destination Payment --yes
//! requeued 3 dead letters for destination "Payment"
//! $ palisade-outbox dead purge --older-than 7d --yes
//! deleted 12 dead letters dead-lettered more than 7days ago
//! ```
//!
//! - **stats**: per destination and in total, the pending events (claimed or not), those of
//!   them retrying after a failure, the oldest one's staging time and age (by the database's
//!   clock), the dead letters, and the events published in the last minute. The last are
//!   counted in `palisade_outbox_published`, so they show only when the relay keeps published
//!   events (a `retention`); without one they are deleted on publish and the count stays 0.
//!   `--json` gives [`Stats`]: `{"pending", "retrying", "oldest_pending_at",
//!   "oldest_pending_age_ms", "dead", "published_last_minute", "destinations": [{"destination", ...the same counts}]}`.
//! - **dead list** (`--destination`, `--older-than`, `--limit`, 1 or more, default 100) and
//!   **dead show** print [`DeadLetter`]s, oldest first; a row that cannot be read back as an
//!   event shows no event, and its last error says why. An id is a sequence number or an event
//!   id. Their text output (and `stats`') shows control characters escaped (`\u{1b}`, `\n`),
//!   so text from outside (an error quoting a receiver's body, an event's fields) never
//!   reaches the terminal as escape sequences.
//! - **dead requeue** resets the attempts and clears the dead-letter mark (the last error
//!   stays until the next attempt). The relay publishes the event at its next claim that looks
//!   at the whole table: on PostgreSQL within the store's full-scan interval (1 s), on SQLite
//!   at the next claim. An event requeued after later events of its aggregate were published
//!   reaches consumers after them.
//! - **Nothing changes in bulk without `--yes`**: `dead requeue --all` and `dead purge`
//!   without it say how many dead letters they would touch, change nothing, and exit with
//!   status 2. Requeueing one dead letter by id needs no flag; `dead purge` also needs
//!   `--older-than` (`7d`, `12h`, `30m`: [humantime](https://docs.rs/humantime)'s durations).
//! - **The database**: `--database-url` or `DATABASE_URL`, `postgres://` (tables in the
//!   connection's `search_path`) or `sqlite:` (the file must exist). `stats`, `dead list`
//!   and `dead show` run read-only (a read-only PostgreSQL session, the SQLite file opened
//!   read-only). The tool never creates or alters a table: on a database
//!   without the outbox tables every command fails with `no outbox tables in this database:
//!   run palisade_outbox's migrate, or check the database URL (and, on PostgreSQL, the schema
//!   in its search_path)`.
//! - **Exit status**: 0 done; 1 failed (database, missing tables, no such dead letter, output
//!   that cannot be written); 2 refused (bad arguments, a bulk change without `--yes`). A
//!   reader that stops early (`| head -1`) is no failure: the tool stops writing and exits 0,
//!   the command done. Messages go to stderr, results (text or `--json`) to stdout.
//!
//! # Cargo features
//!
//! No feature is on by default, and no database driver is compiled without one: the publish
//! hook ([`PublishHookLayer`], [`OutboxContext`], [`Wakeup`]), the event types, the
//! [`Relay`] with the [`OutboxStore`] trait it claims from, the [`Publisher`] trait and the
//! [`ChannelPublisher`] need none, so a service whose relay runs elsewhere takes the hook
//! alone. A database feature brings sqlx, its store, the connections [`stage`](stage()) and
//! [`process_once`] take ([`OutboxConnection`]), the operator's [`OutboxAdmin`] on its
//! store, and the [`OutboxError::Database`], [`OutboxError::Migration`] and
//! [`OutboxError::MissingTables`] errors.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlite` | no | [`sqlite::SqliteStore`], staging and the inbox on SQLite (sqlx) |
//! | `postgres` | no | [`postgres::PgStore`], staging and the inbox on PostgreSQL (sqlx), `LISTEN`/`NOTIFY` wake-ups |
//! | `admin` | no | [`admin::AdminRouter`], the operator's routes for an admin port (axum, humantime) |
//! | `nats` | no | [`NatsPublisher`] (async-nats) |
//! | `rabbitmq` | no | [`RabbitMqPublisher`] (lapin) |
//! | `redis` | no | [`RedisPublisher`] (redis) |
//! | `kafka` | no | [`KafkaPublisher`] (rskafka: pure Rust, no C library, no compression codecs) |
//! | `http` | no | [`HttpPublisher`] (hyper-util's client, palisade-webhook's signing) |
//!
//! # The publish hook and layer order
//!
//! [`PublishHookLayer`] inserts an [`OutboxContext`] into each request's extensions: the
//! correlation id from `X-Correlation-ID`, else the `traceparent`'s trace id, else a fresh
//! UUIDv7; the causation id from `X-Request-ID`; the trace context. An id over 255 bytes is
//! ignored, as if the header were missing. When the inner service's
//! future completes (response or error) for a request with an unsafe method (`POST`, `PUT`,
//! `PATCH`, `DELETE`) it wakes the relay, so events leave within milliseconds rather than a
//! poll interval; safe methods (`GET`, `HEAD`, ...) stage nothing and wake nothing unless
//! [`PublishHookLayer::wake_on_safe_methods`] says otherwise. A request dropped before completing wakes
//! nothing and its events go with the next poll. It adds no latency to the response: waking is
//! a notification, the relay does the work on its own task.
//!
//! Server stack, outermost first: tracing / request id → webhook verify → idempotency (a
//! replay skips everything inside, staging nothing) → **outbox hook** → bulkhead → timeout →
//! handler. Inside idempotency, so a replayed response does not wake the relay; outside the
//! bulkhead and timeout, so a handler that committed and then timed out still wakes it.
//!
//! # Telemetry
//!
//! An event hook set with the builder's `on_event` hears of every dead letter (`LayerEvent::OutboxDeadLettered`, with the destination and the error), from the relay's `on_event`, on the
//! calling task ([`palisade_core::events`]); unset, it costs nothing.
//!
//! Metrics (names from `palisade_core::telemetry::outbox`, label `name` = the relay's name):
//! `palisade_outbox_published_total`, `palisade_outbox_failed_total` (failed attempts),
//! `palisade_outbox_dead_lettered_total`, and the gauges `palisade_outbox_pending` and
//! `palisade_outbox_lag_seconds` (age of the oldest pending event) refreshed every
//! `backlog_interval`; the histogram `palisade_outbox_publish_lag_seconds`, each published
//! event's time from its timestamp (set when it was staged, in the committing transaction) to
//! the broker's acknowledgement, on the wall clock. Tracing under the target
//! `palisade::outbox`: an `info` span `palisade.outbox.batch` per batch with the fields
//! `name`, `claimed`, `published`, `failed`, `dead_lettered` (see
//! [`spans`](palisade_core::telemetry::spans) for exporting it to OpenTelemetry); a warning for each
//! dead-lettered event, each unreadable row, each field a publisher left out, and each failed
//! batch, with the error and every cause it carries (`outbox database error: error
//! communicating with database: ...`). An unreadable row counts in `claimed`,
//! `palisade_outbox_failed_total` and `palisade_outbox_dead_lettered_total`. The admin router
//! logs each requeue and purge (info, with the filter and the number of rows) and each failed
//! operation (warning) under the same target.
//!
//! # Performance
//!
//! An event's time from commit to consumer, with the hook, is the wake-up, one
//! claim (a single round trip to the database, which also checks
//! per-aggregate order and skips aggregates waiting for a retry), and the
//! publish with the broker's acknowledgement; a relay on a pool of its own
//! without `test_before_acquire` takes its connection without a round trip.
//! A backlog drains batch after batch, each aggregate's run published
//! pipelined, so larger batches drain faster.
//!
//! Polling alone keeps up under a steady stream only because a busy relay re-claims 10 ms
//! after a non-empty batch; an event committed after a quiet spell waits for the next poll,
//! half the poll interval on average. The hook removes that wait. The live test
//! `the_hook_publishes_well_before_the_poll_interval` checks it on every run: with a 1 s
//! poll, events staged in requests reach the consumer within 500 ms, median under 100 ms
//! (about 1.5 ms in a debug build), where each would wait about a second without it.
//!
//! **Headline cost**: PostgreSQL to NATS JetStream on one machine, at about
//! 2,000 events/s, commit to consumer with the hook takes a median of 0.7 to
//! 1.0 ms and a p99 of 2.7 to 4.6 ms, and a backlog drains at 48,000 to 61,000
//! events/s in batches of 1000; every figure, beside the plain sqlx +
//! async-nats loop measured in the same runs and with the machine and load,
//! is in the [benchmark report](https://github.com/palisade-rs/palisade/blob/main/benches/REPORT.md).
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod envelope;
mod error;
mod hook;
mod publisher;
mod relay;
mod store;

pub use hook::{OutboxContext, PublishHook, PublishHookLayer, Wakeup, context, future};
pub use store::admin::{
    Counts, DeadLetterFilter, DeadLetterId, DestinationStats, InvalidDeadLetterId, OutboxAdmin, Stats,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::postgres;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::sqlite;
pub use store::{Backlog, Claimed, ClaimedBatch, DeadLetter, Disposition, OutboxStore, Unreadable, inbox, stage};

pub use envelope::{CloudEvent, Encoding, Event, MAX_PAYLOAD_DEPTH, Metadata, TraceContext};
pub use error::{ConfigError, OutboxError, PublishError, PublishErrorKind, PublishTimeout, error_chain};
pub use inbox::{Seen, process_once};
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use publisher::NatsPublisher;
pub use publisher::{ChannelClosed, ChannelPublisher, Publisher, PublisherHealth, UnsendableField};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use publisher::{HttpPublishError, HttpPublisher, HttpPublisherBuilder};
#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub use publisher::{KafkaPublishError, KafkaPublisher};
#[cfg(feature = "rabbitmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbitmq")))]
pub use publisher::{RabbitMqConnectError, RabbitMqPublisher, RabbitMqRejected};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use publisher::{ReconnectingConnection, RedisPublisher};
pub use relay::{BatchReport, Relay, RelayBuilder, RelayHandle};
pub use stage::{OutboxConnection, stage};
