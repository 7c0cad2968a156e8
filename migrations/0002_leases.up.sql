-- Attempts, leases and retries (issue 3): a running job holds a lease its worker renews; a job
-- whose lease lapsed is reclaimed by the sweep; retries wait until available_at.
ALTER TABLE analytics.export_jobs
    -- The running attempt's lease: renewed by its heartbeat, reclaimable once it has passed.
    ADD COLUMN lease_expires_at timestamptz,
    -- Which worker process runs (or last ran) the job: host:pid, for operators and fault tests.
    ADD COLUMN claimed_by text,
    -- Attempts handed back cleanly (worker shutdown) do not count against EXPORT_MAX_ATTEMPTS.
    ADD COLUMN handbacks integer NOT NULL DEFAULT 0,
    -- A pending job is not claimed before this time (retry backoff); NULL means at once.
    ADD COLUMN available_at timestamptz;

-- The sweep's scan for running jobs whose worker stopped renewing the lease.
CREATE INDEX export_jobs_running_lease_idx ON analytics.export_jobs (lease_expires_at)
    WHERE status = 'running';
-- Finished jobs whose multipart upload could not be aborted yet (S3 was down).
CREATE INDEX export_jobs_leftover_upload_idx ON analytics.export_jobs (updated_at)
    WHERE upload_id IS NOT NULL AND status IN ('failed', 'succeeded', 'expired');
