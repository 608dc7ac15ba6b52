-- Herald schema v1 (MySQL 8 / MariaDB 10.6+): outbox, dead letters, inbox, the event feed's
-- watermark and the per-key publish locks.
-- Times are UTC, DATETIME(6). MySQL's DDL commits statement by statement, so every statement here
-- can run again (IF NOT EXISTS, INSERT IGNORE) after a migration that stopped half-way.
-- Text compares byte for byte (utf8mb4_bin): keys, handler names and ids are exact.

CREATE TABLE IF NOT EXISTS herald_outbox (
    id               BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    message_id       CHAR(36)     NOT NULL,
    message_type     VARCHAR(255) NOT NULL,
    `key`            TEXT,
    payload          MEDIUMTEXT   NOT NULL,
    headers          MEDIUMTEXT   NOT NULL,
    status           VARCHAR(16)  NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processed', 'failed')),
    fail_count       INT          NOT NULL DEFAULT 0,
    occurred_at      DATETIME(6)  NOT NULL,
    processed_at     DATETIME(6),
    failed_at        DATETIME(6),
    last_error       MEDIUMTEXT,
    -- Due at once: the relay compares with UTC_TIMESTAMP(6).
    next_attempt_at  DATETIME(6)  NOT NULL DEFAULT '1970-01-01 00:00:01',
    lease_owner      VARCHAR(255),
    lease_expires_at DATETIME(6),
    handlers_done    TEXT,
    only_handlers    TEXT,
    UNIQUE KEY herald_outbox_message_id (message_id),
    KEY herald_outbox_pending (status, id),
    KEY herald_outbox_pending_key (`key`(191), status, id),
    KEY herald_outbox_finished (status, processed_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The event feed's watermark: every row with an id at or below it has committed (or is gone).
-- Each publish holds a shared lock on this row until its transaction ends; `events_after` takes
-- the exclusive lock to move the watermark, so it moves only while no publish is open.
CREATE TABLE IF NOT EXISTS herald_positions (
    singleton     TINYINT NOT NULL PRIMARY KEY CHECK (singleton = 1),
    last_position BIGINT  NOT NULL
) ENGINE = InnoDB;
INSERT IGNORE INTO herald_positions (singleton, last_position) VALUES (1, 0);

-- Per-key publish locks: a publish with a key locks the row of CRC32(key) until its transaction
-- ends, so per key id order is commit order.
CREATE TABLE IF NOT EXISTS herald_keys (
    hash INT UNSIGNED NOT NULL PRIMARY KEY
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS herald_dead_letters (
    id               BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    message_id       CHAR(36)     NOT NULL,
    message_type     VARCHAR(255) NOT NULL,
    handler          VARCHAR(255) NOT NULL,
    reason           VARCHAR(32)  NOT NULL,
    attempts         INT          NOT NULL,
    envelope         MEDIUMTEXT   NOT NULL,
    payload          MEDIUMTEXT   NOT NULL,
    first_error      MEDIUMTEXT,
    last_error       MEDIUMTEXT,
    first_failed_at  DATETIME(6),
    last_failed_at   DATETIME(6),
    dead_lettered_at DATETIME(6)  NOT NULL,
    UNIQUE KEY herald_dead_letters_message_handler (message_id, handler)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS herald_inbox (
    handler      VARCHAR(255) NOT NULL,
    message_id   VARCHAR(255) NOT NULL,
    processed_at DATETIME(6)  NOT NULL,
    PRIMARY KEY (handler, message_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
