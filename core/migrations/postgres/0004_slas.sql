-- Herald schema v4 (PostgreSQL): deadline SLA expectations ("after A, B within T").
-- One row per SLA and A: opened with A (in A's outbox transaction when A is stored), moved to
-- `fulfilled` / `fulfilled_late` by a B of the same key, or to `breached` by a sweeper (competing
-- sweepers take due rows with FOR UPDATE SKIP LOCKED), which writes the SlaBreached event into
-- herald_outbox in the same transaction. Rows are kept.

CREATE TABLE herald_sla_expectations (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sla             TEXT        NOT NULL,
    correlation_key TEXT        NOT NULL,
    a_message_id    UUID        NOT NULL,
    opened_at       TIMESTAMPTZ NOT NULL,
    due_at          TIMESTAMPTZ NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'fulfilled', 'fulfilled_late', 'breached')),
    fulfilled_at    TIMESTAMPTZ,
    fulfilled_by    UUID,
    breached_at     TIMESTAMPTZ,
    UNIQUE (sla, a_message_id)
);

-- The sweeper's scan: open expectations by due time.
CREATE INDEX herald_sla_due ON herald_sla_expectations (due_at) WHERE state = 'pending';
-- A B's lookup: the expectations of its SLA and key that still take a fulfilment.
CREATE INDEX herald_sla_key ON herald_sla_expectations (sla, correlation_key)
    WHERE state IN ('pending', 'breached');
