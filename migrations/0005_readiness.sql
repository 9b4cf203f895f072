-- ctibridge readiness probe row, schema version 5.
--
-- One row, rewritten by every readiness probe (`GET /readyz`): a committed write is the
-- proof that the store takes writes (not read-only, not locked, disk not full). Nothing
-- reads it. Same portability rules as 0001.

CREATE TABLE readiness (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at TEXT NOT NULL             -- when the last probe wrote it (UTC)
);
