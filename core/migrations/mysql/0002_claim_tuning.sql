-- Herald schema v2 (MySQL/MariaDB): nothing to do. On SQLite and PostgreSQL v2 tunes the relay's
-- indexes; MySQL has no partial indexes and v1 already has the indexes the relay uses. The
-- version stays, so that every dialect's number means the same schema.
DO 0;
