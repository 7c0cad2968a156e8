DROP INDEX IF EXISTS analytics.export_jobs_leftover_upload_idx;
DROP INDEX IF EXISTS analytics.export_jobs_running_lease_idx;
ALTER TABLE analytics.export_jobs
    DROP COLUMN IF EXISTS available_at,
    DROP COLUMN IF EXISTS handbacks,
    DROP COLUMN IF EXISTS claimed_by,
    DROP COLUMN IF EXISTS lease_expires_at;
