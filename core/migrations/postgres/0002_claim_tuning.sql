-- Herald schema v2 (PostgreSQL): cheaper relay writes.

-- Leave room in each page so that the lease update (lease_owner, lease_expires_at: no index uses
-- them) stays on its page as a HOT update and writes no index entry. Applies to new pages.
ALTER TABLE herald_outbox SET (fillfactor = 70);

-- The per-key order check only ever looks up rows that have a key: keyless rows need no entry.
DROP INDEX herald_outbox_pending_key;
CREATE INDEX herald_outbox_pending_key ON herald_outbox (key, id)
    WHERE status = 'pending' AND key IS NOT NULL;
