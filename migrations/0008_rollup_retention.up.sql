-- Retention (DATA_RETENTION_MONTHS): the prune_rollups tick deletes rollups whose bucket_start is
-- before the retention cutoff, a bounded batch at a time, oldest first. The primary key leads with
-- org_id, so it cannot find the old rows of every org; these indexes make each batch, and a tick
-- with nothing to delete, an index range scan at the old end of the table.
-- They index bucket_start AT TIME ZONE 'UTC' (the same order as bucket_start: UTC has no offset
-- changes) rather than bucket_start itself, so that only the retention queries, which name that
-- expression, can use them: a plain bucket_start index changes the plan of the export queries
-- (measured: an org holding most rows was exported through it with an incremental sort, slower).
-- On a large table CREATE INDEX blocks writes to it (not reads) while it builds. To avoid that,
-- build them beforehand with CREATE INDEX CONCURRENTLY under these names: IF NOT EXISTS then
-- makes this migration a no-op for them.
CREATE INDEX IF NOT EXISTS hourly_rollups_retention_idx
    ON analytics.hourly_rollups ((bucket_start AT TIME ZONE 'UTC'));
CREATE INDEX IF NOT EXISTS daily_rollups_retention_idx
    ON analytics.daily_rollups ((bucket_start AT TIME ZONE 'UTC'));
