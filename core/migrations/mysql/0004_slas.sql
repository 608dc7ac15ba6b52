-- Herald schema v4 (MySQL 8 / MariaDB 10.6+): deadline SLA expectations ("after A, B within T").
-- One row per SLA and A: opened with A (in A's outbox transaction when A is stored), moved to
-- `fulfilled` / `fulfilled_late` by a B of the same key, or to `breached` by a sweeper (competing
-- sweepers take due rows with FOR UPDATE SKIP LOCKED), which writes the SlaBreached event into
-- herald_outbox in the same transaction. Rows are kept. Times are UTC, DATETIME(6).

CREATE TABLE IF NOT EXISTS herald_sla_expectations (
    id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    sla             VARCHAR(255) NOT NULL,
    correlation_key TEXT         NOT NULL,
    a_message_id    CHAR(36)     NOT NULL,
    opened_at       DATETIME(6)  NOT NULL,
    due_at          DATETIME(6)  NOT NULL,
    state           VARCHAR(16)  NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'fulfilled', 'fulfilled_late', 'breached')),
    fulfilled_at    DATETIME(6),
    fulfilled_by    CHAR(36),
    breached_at     DATETIME(6),
    UNIQUE KEY herald_sla_expectation (sla, a_message_id),
    -- The sweeper's scan: open expectations by due time.
    KEY herald_sla_due (state, due_at),
    -- A B's lookup: the expectations of its SLA and key.
    KEY herald_sla_key (sla, correlation_key(191), state)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
