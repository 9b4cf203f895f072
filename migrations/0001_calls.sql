-- ctibridge call record store, schema version 1.
--
-- Portable SQL on purpose: the same shape is meant to run on PostgreSQL when several bridges
-- share one store, so only types both engines understand are used:
--   * ids are TEXT;
--   * timestamps are TEXT in UTC, fixed width `YYYY-MM-DDTHH:MM:SS.ffffffZ`, so that string
--     order is time order and range/keyset conditions work on plain TEXT indexes;
--   * durations are DOUBLE PRECISION seconds (REAL affinity in SQLite; PostgreSQL's own REAL
--     would be single precision and lose milliseconds on long calls);
--   * booleans are INTEGER 0/1;
--   * journal positions are BIGINT (INTEGER affinity in SQLite, 64-bit in PostgreSQL).
--
-- `calls.record_json` (the whole record as JSON) is the source of truth for reads through the
-- bridge; every other column and table is a projection of it, rewritten together with it in
-- one transaction, for filtering and for reporting tools that query SQL directly.

CREATE TABLE calls (
    id              TEXT PRIMARY KEY NOT NULL,
    pbx             TEXT NOT NULL,
    linkedid        TEXT NOT NULL,
    direction       TEXT NOT NULL,      -- internal | inbound | outbound | unknown
    from_number     TEXT,
    from_name       TEXT,
    from_extension  TEXT,
    to_number       TEXT,
    to_name         TEXT,
    to_extension    TEXT,
    started_at      TEXT NOT NULL,
    answered_at     TEXT,
    ended_at        TEXT,
    ring_s          DOUBLE PRECISION NOT NULL,
    talk_s          DOUBLE PRECISION NOT NULL,
    hold_s          DOUBLE PRECISION NOT NULL,
    disposition     TEXT NOT NULL,      -- answered | no_answer | busy | failed
    missed          INTEGER NOT NULL,   -- 0 | 1
    answered_by     TEXT,
    dial_request_id TEXT,
    complete        INTEGER NOT NULL,   -- 0 while the call is live
    record_json     TEXT NOT NULL
);

-- Default listing and since/until windows: newest first, id breaks ties (keyset pagination).
CREATE INDEX calls_started_at ON calls (started_at, id);
-- Equality filter + the same order, so a filtered page is an index range, not a sort.
CREATE INDEX calls_direction_started_at ON calls (direction, started_at, id);
CREATE INDEX calls_disposition_started_at ON calls (disposition, started_at, id);
-- Click-to-call: find the record a `POST /api/v1/dial` request produced.
CREATE INDEX calls_dial_request_id ON calls (dial_request_id);

-- One row per channel of the call, in record order.
CREATE TABLE call_legs (
    call_id           TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    idx               INTEGER NOT NULL,
    channel           TEXT NOT NULL,
    uniqueid          TEXT NOT NULL,
    endpoint          TEXT,
    sip_call_id       TEXT,
    started_at        TEXT,
    answered_at       TEXT,
    ended_at          TEXT,
    hangup_cause      INTEGER,
    hangup_cause_text TEXT,
    dial_status       TEXT,
    missed            INTEGER NOT NULL,  -- 0 | 1: this leg's phone missed the call
    phone_mac         TEXT,
    phone_ip          TEXT,
    phone_model       TEXT,
    phone_call_handle TEXT,
    PRIMARY KEY (call_id, idx)
);

-- A SIP Call-ID seen in a phone's or a SIP trace's view leads to its call.
CREATE INDEX call_legs_sip_call_id ON call_legs (sip_call_id);

-- Every extension (kind 'ext') and number (kind 'number') the call involves, for the `ext` and
-- `number` filters. Values are normalised as the store documents (numbers without whitespace).
-- `started_at` repeats the call's, so that one party's calls are an index range already in
-- list order: a page of "calls of 101" reads `limit` index entries, not all of 101's calls.
CREATE TABLE call_parties (
    call_id    TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,           -- ext | number
    value      TEXT NOT NULL,
    started_at TEXT NOT NULL,
    PRIMARY KEY (call_id, kind, value)
);

CREATE INDEX call_parties_value ON call_parties (value, kind, started_at, call_id);

-- Transfers inside the conversation, in record order.
CREATE TABLE call_transfers (
    call_id     TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    at          TEXT,
    kind        TEXT NOT NULL,          -- blind | attended
    by_ext      TEXT,
    to_target   TEXT,
    result      TEXT,
    PRIMARY KEY (call_id, idx)
);

-- AMI and phone events merged in time order.
CREATE TABLE call_timeline (
    call_id TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    idx     INTEGER NOT NULL,
    at      TEXT NOT NULL,
    source  TEXT NOT NULL,              -- ami | phone
    event   TEXT NOT NULL,
    subject TEXT,
    detail  TEXT,
    PRIMARY KEY (call_id, idx)
);

-- Restart recovery: the journal position up to which records are stored. Exactly one row
-- (id = 1) once the first checkpoint is written.
CREATE TABLE checkpoint (
    id              INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    journal_segment BIGINT NOT NULL,
    journal_offset  BIGINT NOT NULL,
    saved_at        TEXT NOT NULL       -- same format as other timestamps, with nanoseconds
);
