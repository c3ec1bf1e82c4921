-- palisade-outbox schema, version 1 (SQLite). Times are Unix epoch milliseconds.
CREATE TABLE palisade_outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    event_type       TEXT NOT NULL,
    aggregate_type   TEXT NOT NULL,
    aggregate_id     TEXT NOT NULL,
    destination      TEXT NOT NULL,
    occurred_at      TEXT NOT NULL,
    version          INTEGER NOT NULL,
    payload          TEXT NOT NULL,
    metadata         TEXT NOT NULL,
    staged_at        INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    claimed_by       TEXT,
    claimed_until    INTEGER,
    last_error       TEXT,
    dead_lettered_at INTEGER
);
CREATE INDEX palisade_outbox_aggregate ON palisade_outbox (aggregate_type, aggregate_id, seq);
CREATE INDEX palisade_outbox_claimed ON palisade_outbox (claimed_until) WHERE claimed_until IS NOT NULL;
CREATE INDEX palisade_outbox_retry ON palisade_outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX palisade_outbox_dead ON palisade_outbox (dead_lettered_at) WHERE dead_lettered_at IS NOT NULL;

CREATE TABLE palisade_outbox_published (
    seq            INTEGER PRIMARY KEY,
    event_id       TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    destination    TEXT NOT NULL,
    occurred_at    TEXT NOT NULL,
    version        INTEGER NOT NULL,
    payload        TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    staged_at      INTEGER NOT NULL,
    attempts       INTEGER NOT NULL,
    published_at   INTEGER NOT NULL
);
CREATE INDEX palisade_outbox_published_at ON palisade_outbox_published (published_at);

CREATE TABLE palisade_inbox (
    consumer     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    PRIMARY KEY (consumer, event_id)
);
