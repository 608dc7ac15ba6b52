-- Herald schema v3 (PostgreSQL): a dead letter says what kind of failure it was, as data
-- (`error`, `permanent_error`, `panic`, `timeout`, `extraction`, `malformed`, `cancelled`,
-- `shutdown`; NULL when no attempt failed: overflow, or still queued at shutdown).
ALTER TABLE herald_dead_letters ADD COLUMN failure_kind TEXT;

-- jsonb refuses a string holding U+0000 (`"\u0000"`), which JSON and Rust strings allow. Such a
-- payload or envelope is kept here as its JSON text instead (the jsonb column then holds `null`),
-- so that the dead letter is stored rather than lost.
ALTER TABLE herald_dead_letters ADD COLUMN payload_text TEXT;
ALTER TABLE herald_dead_letters ADD COLUMN envelope_text TEXT;
