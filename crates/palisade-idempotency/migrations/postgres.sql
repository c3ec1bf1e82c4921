-- palisade-idempotency: the Postgres store's table. Idempotent: safe to run at every start.
CREATE TABLE IF NOT EXISTS palisade_idempotency_keys (
    -- 64 hex digits: SHA-256 of scope, method, path and the client's key.
    key         text        PRIMARY KEY,
    -- SHA-256 of the first request's method, path, query and body.
    fingerprint bytea       NOT NULL,
    -- The fencing token of the request that holds (or held) the lock.
    token       bytea       NOT NULL,
    -- NULL while in flight; the encoded response once completed.
    response    bytea,
    -- When the lock (in flight) or the stored response (completed) expires.
    expires_at  timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS palisade_idempotency_keys_expires_at ON palisade_idempotency_keys (expires_at);
