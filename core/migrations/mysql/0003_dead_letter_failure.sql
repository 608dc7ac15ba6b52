-- Herald schema v3 (MySQL/MariaDB): a dead letter says what kind of failure it was, as data
-- (`error`, `permanent_error`, `panic`, `timeout`, `extraction`, `malformed`, `cancelled`,
-- `shutdown`; NULL when no attempt failed: overflow, or still queued at shutdown).
ALTER TABLE herald_dead_letters ADD COLUMN failure_kind VARCHAR(32);
