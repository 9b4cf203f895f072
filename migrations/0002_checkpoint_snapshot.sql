-- ctibridge schema version 2: restart from a checkpoint.
--
-- Same portable conventions as 0001 (TEXT ids and fixed-width UTC timestamps, BIGINT journal
-- positions, no engine-only types; the JSON is plain TEXT so that PostgreSQL takes it as is).
--
-- A checkpoint says: every input of the journal before (journal_segment, journal_offset) has
-- gone through the correlator, the records it completed are in `calls`, and `snapshot` is the
-- correlator's state right after it. On start, `serve` restores that state and reads the
-- journal from the position on, instead of replaying it all (docs/ARCHITECTURE.md, "Restart").
-- The row is written in one transaction with the schema-1 `checkpoint` row (same position) and
-- the `checkpoint_pbx` rows below. Exactly one row (id = 1) once the first one is saved.
CREATE TABLE checkpoint_snapshot (
    id              INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    journal_segment BIGINT NOT NULL,
    journal_offset  BIGINT NOT NULL,
    format_version  INTEGER NOT NULL,   -- the correlator's snapshot format (SNAPSHOT_VERSION)
    snapshot        TEXT NOT NULL,      -- the correlator's state, JSON
    orphans         TEXT NOT NULL,      -- the phone callbacks the API lists as orphans, JSON
    saved_at        TEXT NOT NULL       -- same format as other timestamps, with nanoseconds
);

-- When the journal last saw each PBX's AMI link, as of the checkpoint: where a restart's first
-- gap for that PBX begins (the AMI client journals it after its first resync).
CREATE TABLE checkpoint_pbx (
    pbx       TEXT PRIMARY KEY NOT NULL,
    last_seen TEXT NOT NULL
);
