-- ctibridge schema version 3: click-to-call requests (POST /api/v1/dial, AMI UserEvent CtiDial).
--
-- Same portable conventions as 0001 (TEXT ids and fixed-width UTC timestamps, no engine-only
-- types). `status_json` (the request as GET /api/v1/dial/{id} shows it) is the source of truth;
-- the other columns are a projection of it for SQL users and lookups.

CREATE TABLE dial_requests (
    id                TEXT PRIMARY KEY NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    origin            TEXT NOT NULL,      -- api | pbx
    from_extension    TEXT NOT NULL,
    to_number         TEXT NOT NULL,      -- as dialled (separators removed)
    via               TEXT NOT NULL,      -- phone | pbx: the path taken
    state             TEXT NOT NULL,      -- pending | sent | ringing | answered | failed
    reason            TEXT,               -- why it failed
    pbx               TEXT,
    linkedid          TEXT,
    -- calls.id of the resulting record; no foreign key, the record is stored later (or never).
    record_id         TEXT,
    -- Idempotency-Key of the request and a digest of the API token it came with (never the
    -- token itself), set once when the request is created.
    idempotency_scope TEXT,
    idempotency_key   TEXT,
    status_json       TEXT NOT NULL
);

-- The request a call record came from (restoring links after a journal replay).
CREATE INDEX dial_requests_record_id ON dial_requests (record_id);
-- An Idempotency-Key seen again within its time to live.
CREATE INDEX dial_requests_idempotency ON dial_requests (idempotency_scope, idempotency_key, created_at);
-- Newest first listings by time.
CREATE INDEX dial_requests_created_at ON dial_requests (created_at, id);
