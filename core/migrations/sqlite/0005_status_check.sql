-- Herald schema v5 (SQLite): the outbox's status check written as comparisons.
-- `CHECK (status IN ('pending', 'processed', 'failed'))` made SQLite build and clear a temporary
-- b-tree for the IN list on every row an UPDATE of `status` touches: 36% of the instructions of a
-- relay's write-back of 100 rows (callgrind, docs/BENCHMARKS.md). The comparisons mean the same.
-- SQLite cannot change a CHECK in place, so the table is rebuilt (its rows copied once); indexes
-- and triggers an application added to `herald_outbox` are dropped with the old table.

CREATE TABLE herald_outbox_v5 (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT    NOT NULL UNIQUE,
    message_type     TEXT    NOT NULL,
    key              TEXT,
    payload          TEXT    NOT NULL,
    headers          TEXT    NOT NULL DEFAULT '{}',
    status           TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (status = 'pending' OR status = 'processed' OR status = 'failed'),
    fail_count       INTEGER NOT NULL DEFAULT 0,
    occurred_at      TEXT    NOT NULL,
    processed_at     TEXT,
    failed_at        TEXT,
    last_error       TEXT,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    handlers_done    TEXT,
    only_handlers    TEXT
);

INSERT INTO herald_outbox_v5 (id, message_id, message_type, key, payload, headers, status,
                              fail_count, occurred_at, processed_at, failed_at, last_error,
                              next_attempt_at, lease_owner, lease_expires_at, handlers_done,
                              only_handlers)
SELECT id, message_id, message_type, key, payload, headers, status, fail_count, occurred_at,
       processed_at, failed_at, last_error, next_attempt_at, lease_owner, lease_expires_at,
       handlers_done, only_handlers
FROM herald_outbox ORDER BY id;

-- Ids are the event feed's positions and must never be reused: the new table continues from the
-- old one's AUTOINCREMENT high-water mark, which is above the highest id still stored when
-- retention has deleted the newest finished rows.
DELETE FROM sqlite_sequence WHERE name = 'herald_outbox_v5';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'herald_outbox_v5', seq FROM sqlite_sequence WHERE name = 'herald_outbox';

-- An application's views over `herald_outbox` keep working: with the legacy rule the rename
-- does not re-check every view (which would fail while `herald_outbox` is missing), and the views
-- find the new table under the old name. Triggers an application put on the old table go with it.
PRAGMA legacy_alter_table = ON;
DROP TABLE herald_outbox;
ALTER TABLE herald_outbox_v5 RENAME TO herald_outbox;
PRAGMA legacy_alter_table = OFF;

CREATE INDEX herald_outbox_pending ON herald_outbox (id) WHERE status = 'pending';
CREATE INDEX herald_outbox_pending_key ON herald_outbox (key, id)
    WHERE status = 'pending' AND key IS NOT NULL;
CREATE INDEX herald_outbox_finished ON herald_outbox (processed_at) WHERE status <> 'pending';
