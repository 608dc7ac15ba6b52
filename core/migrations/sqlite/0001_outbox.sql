-- Herald schema v1 (SQLite): outbox, dead letters, inbox.
-- Times a person reads are RFC 3339 text in UTC with milliseconds (sortable as text);
-- times the relay computes with (next_attempt_at, lease_expires_at) are Unix milliseconds.

CREATE TABLE herald_outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT    NOT NULL UNIQUE,
    message_type     TEXT    NOT NULL,
    key              TEXT,
    payload          TEXT    NOT NULL,
    headers          TEXT    NOT NULL DEFAULT '{}',
    status           TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processed', 'failed')),
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

CREATE INDEX herald_outbox_pending ON herald_outbox (id) WHERE status = 'pending';
CREATE INDEX herald_outbox_pending_key ON herald_outbox (key, id) WHERE status = 'pending';
CREATE INDEX herald_outbox_finished ON herald_outbox (processed_at) WHERE status <> 'pending';

CREATE TABLE herald_dead_letters (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT    NOT NULL,
    message_type     TEXT    NOT NULL,
    handler          TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    envelope         TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    first_error      TEXT,
    last_error       TEXT,
    first_failed_at  TEXT,
    last_failed_at   TEXT,
    dead_lettered_at TEXT    NOT NULL,
    UNIQUE (message_id, handler)
);

CREATE TABLE herald_inbox (
    handler      TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (handler, message_id)
) WITHOUT ROWID;
