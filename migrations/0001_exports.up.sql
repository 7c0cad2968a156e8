-- The export job table (spec T-S007-P05-022). The rollup tables exports read are the platform's,
-- not this service's: migrations/rollup_tables.sql (`migrate up --with-rollups`) makes them for
-- development and demos.
CREATE SCHEMA IF NOT EXISTS analytics;

CREATE TYPE analytics.export_granularity AS ENUM ('hourly', 'daily', 'monthly');
CREATE TYPE analytics.export_status AS ENUM ('pending', 'running', 'succeeded', 'failed', 'expired');

CREATE TABLE analytics.export_jobs (
    job_id           uuid                          PRIMARY KEY,
    org_id           uuid                          NOT NULL,
    requested_by     text                          NOT NULL,
    time_range_start timestamptz                   NOT NULL,
    time_range_end   timestamptz                   NOT NULL,
    granularity      analytics.export_granularity  NOT NULL,
    -- NULL means every model; otherwise the exact model ids asked for.
    models           text[],
    status           analytics.export_status       NOT NULL DEFAULT 'pending',
    output_uri       text,
    checksum         text,
    row_count        bigint,
    byte_count       bigint,
    initiated_at     timestamptz                   NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz,
    expires_at       timestamptz,
    error_message    text,
    -- Incremented by every claim; writes of an attempt are fenced by it.
    attempt          integer                       NOT NULL DEFAULT 0,
    -- The multipart upload of the current attempt, so a failure path (or a later sweep) can abort it.
    upload_id        text,
    -- When a message for the job was last published; NULL if the broker refused it at creation.
    enqueued_at      timestamptz,
    updated_at       timestamptz                   NOT NULL DEFAULT now(),
    CONSTRAINT export_jobs_time_range CHECK (time_range_start < time_range_end),
    CONSTRAINT export_jobs_checksum_hex CHECK (checksum IS NULL OR checksum ~ '^[0-9a-f]{64}$'),
    CONSTRAINT export_jobs_succeeded_complete CHECK (
        status <> 'succeeded'
        OR (output_uri IS NOT NULL AND checksum IS NOT NULL AND row_count IS NOT NULL
            AND completed_at IS NOT NULL AND expires_at IS NOT NULL)
    )
);

CREATE INDEX export_jobs_org_initiated_idx ON analytics.export_jobs (org_id, initiated_at DESC);
CREATE INDEX export_jobs_active_status_idx ON analytics.export_jobs (status)
    WHERE status IN ('pending', 'running');
-- The scheduler's expiry scan.
CREATE INDEX export_jobs_succeeded_expiry_idx ON analytics.export_jobs (expires_at)
    WHERE status = 'succeeded';
