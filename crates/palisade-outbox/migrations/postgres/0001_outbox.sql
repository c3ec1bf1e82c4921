-- palisade-outbox schema, version 1 (PostgreSQL).
-- Pending events: a row lives here from staging until it is published (or dead-lettered).
CREATE TABLE palisade_outbox (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         UUID NOT NULL UNIQUE,
    event_type       TEXT NOT NULL,
    aggregate_type   TEXT NOT NULL,
    aggregate_id     TEXT NOT NULL,
    destination      TEXT NOT NULL,
    occurred_at      TIMESTAMPTZ NOT NULL,
    version          BIGINT NOT NULL,
    payload          JSONB NOT NULL,
    metadata         JSONB NOT NULL,
    staged_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    last_error       TEXT,
    dead_lettered_at TIMESTAMPTZ
);
-- Per-aggregate order checks walk an aggregate's pending events in staging order.
CREATE INDEX palisade_outbox_aggregate ON palisade_outbox (aggregate_type, aggregate_id, seq);
-- Only failing events carry a retry time, so this stays tiny.
CREATE INDEX palisade_outbox_retry ON palisade_outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX palisade_outbox_dead ON palisade_outbox (dead_lettered_at) WHERE dead_lettered_at IS NOT NULL;

-- Published events kept for the retention period (none when the retention is zero).
CREATE TABLE palisade_outbox_published (
    seq            BIGINT PRIMARY KEY,
    event_id       UUID NOT NULL,
    event_type     TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    destination    TEXT NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    version        BIGINT NOT NULL,
    payload        JSONB NOT NULL,
    metadata       JSONB NOT NULL,
    staged_at      TIMESTAMPTZ NOT NULL,
    attempts       INTEGER NOT NULL,
    published_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX palisade_outbox_published_at ON palisade_outbox_published (published_at);

-- Consumers' record of processed events (the inbox).
CREATE TABLE palisade_inbox (
    consumer     TEXT NOT NULL,
    event_id     UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
