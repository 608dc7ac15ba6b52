-- Herald schema v2 (SQLite): the per-key order check only ever looks up rows that have a key,
-- so keyless rows need no entry in its index.
DROP INDEX herald_outbox_pending_key;
CREATE INDEX herald_outbox_pending_key ON herald_outbox (key, id)
    WHERE status = 'pending' AND key IS NOT NULL;
