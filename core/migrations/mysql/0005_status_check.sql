-- Herald schema v5 (MySQL/MariaDB): nothing changes here. Version 5 rewrites SQLite's status
-- check (core/migrations/sqlite/0005_status_check.sql); the number is kept the same everywhere.
SELECT 1;
