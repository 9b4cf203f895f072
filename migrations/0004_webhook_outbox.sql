-- ctibridge webhook outbox, schema version 4.
--
-- Every live event that matches a `[[webhooks]]` target is written here, one row per target,
-- before any delivery is attempted: delivery survives a crash or a kill -9 and resumes at the
-- next start. Same portability rules as 0001 (TEXT ids and fixed-width UTC TEXT timestamps,
-- BIGINT for event ids, INTEGER for counts and statuses).

CREATE TABLE webhook_outbox (
    target          TEXT NOT NULL,      -- the [[webhooks]] name
    event_id        BIGINT NOT NULL,    -- live event id: the idempotency key receivers see
    event_type      TEXT NOT NULL,      -- call.started, phone.state, ...
    -- Events of one target with the same key are delivered strictly in event_id order: the
    -- call id for call events, `ext:<extension>` for one phone's events; NULL: unordered.
    order_key       TEXT,
    body            TEXT NOT NULL,      -- the event JSON, byte for byte the request body
    created_at      TEXT NOT NULL,
    state           TEXT NOT NULL,      -- pending | delivered | failed (gave up)
    attempts        INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,      -- when a pending row may be tried next
    last_attempt_at TEXT,
    last_status     INTEGER,            -- HTTP status of the last attempt; NULL: no response
    last_error      TEXT,
    finished_at     TEXT,               -- when it was delivered or given up
    PRIMARY KEY (target, event_id)
);

-- A target's worker loads its pending rows in event_id order at start.
CREATE INDEX webhook_outbox_pending ON webhook_outbox (target, state, event_id);
-- Pruning finished rows by age, and the delivery log listing.
CREATE INDEX webhook_outbox_finished ON webhook_outbox (state, finished_at);
CREATE INDEX webhook_outbox_created ON webhook_outbox (created_at, target, event_id);

-- The delivery log: one row per HTTP attempt.
CREATE TABLE webhook_attempts (
    target      TEXT NOT NULL,
    event_id    BIGINT NOT NULL,
    attempt     INTEGER NOT NULL,       -- 1, 2, ... (the X-Ctibridge-Attempt header)
    at          TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    status      INTEGER,                -- HTTP status; NULL: no response (refused, timeout)
    error       TEXT,
    PRIMARY KEY (target, event_id, attempt),
    FOREIGN KEY (target, event_id) REFERENCES webhook_outbox (target, event_id) ON DELETE CASCADE
);
