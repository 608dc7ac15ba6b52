-- Herald schema v1 (PostgreSQL): outbox, dead letters, inbox, commit-order positions, NOTIFY.

CREATE TABLE herald_outbox (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       UUID        NOT NULL UNIQUE,
    message_type     TEXT        NOT NULL,
    key              TEXT,
    payload          TEXT        NOT NULL,
    headers          JSONB       NOT NULL DEFAULT '{}',
    status           TEXT        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processed', 'failed')),
    fail_count       INTEGER     NOT NULL DEFAULT 0,
    occurred_at      TIMESTAMPTZ NOT NULL,
    processed_at     TIMESTAMPTZ,
    failed_at        TIMESTAMPTZ,
    last_error       TEXT,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    handlers_done    JSONB,
    only_handlers    JSONB,
    -- The inserting transaction: events_after hands out positions only below the oldest running
    -- transaction, so a row that commits later can never get a position below one already read.
    txid             XID8        NOT NULL DEFAULT pg_current_xact_id(),
    position         BIGINT UNIQUE
);

CREATE INDEX herald_outbox_pending ON herald_outbox (id) WHERE status = 'pending';
CREATE INDEX herald_outbox_pending_key ON herald_outbox (key, id) WHERE status = 'pending';
CREATE INDEX herald_outbox_finished ON herald_outbox (processed_at) WHERE status <> 'pending';
CREATE INDEX herald_outbox_unpositioned ON herald_outbox (txid, id) WHERE position IS NULL;

CREATE TABLE herald_positions (
    singleton     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last_position BIGINT  NOT NULL
);
INSERT INTO herald_positions (singleton, last_position) VALUES (TRUE, 0);

CREATE FUNCTION herald_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_outbox', '');
    RETURN NULL;
END $$;

-- One notification per inserting statement, delivered at commit (never for a rollback).
CREATE TRIGGER herald_outbox_notify AFTER INSERT ON herald_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION herald_outbox_notify();

CREATE TABLE herald_dead_letters (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       UUID        NOT NULL,
    message_type     TEXT        NOT NULL,
    handler          TEXT        NOT NULL,
    reason           TEXT        NOT NULL,
    attempts         INTEGER     NOT NULL,
    envelope         JSONB       NOT NULL,
    payload          JSONB       NOT NULL,
    first_error      TEXT,
    last_error       TEXT,
    first_failed_at  TIMESTAMPTZ,
    last_failed_at   TIMESTAMPTZ,
    dead_lettered_at TIMESTAMPTZ NOT NULL,
    UNIQUE (message_id, handler)
);

CREATE TABLE herald_inbox (
    handler      TEXT        NOT NULL,
    message_id   TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (handler, message_id)
);
