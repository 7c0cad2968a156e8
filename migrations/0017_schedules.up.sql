-- Recurring exports (issue 16). A schedule says when it runs (cadence, a local hour of its time
-- zone) and which period each run exports; the scheduler's tick creates one ordinary export job
-- per schedule and period. The unique index makes that exactly one, whoever runs the tick and
-- however often: two schedulers, a restart, a catch-up after an outage.
CREATE TABLE analytics.export_schedules (
    schedule_id   uuid                         PRIMARY KEY,
    org_id        uuid                         NOT NULL,
    created_by    text                         NOT NULL,
    cadence       text                         NOT NULL
        CONSTRAINT export_schedules_cadence CHECK (cadence IN ('daily', 'weekly', 'monthly')),
    period        text                         NOT NULL
        CONSTRAINT export_schedules_period
        CHECK (period IN ('previous_day', 'previous_week', 'previous_month', 'month_to_date')),
    time_zone     text                         NOT NULL,
    run_at_hour   smallint                     NOT NULL
        CONSTRAINT export_schedules_run_at_hour CHECK (run_at_hour BETWEEN 0 AND 23),
    granularity   analytics.export_granularity NOT NULL,
    -- NULL means every model, as on a job.
    models        text[],
    output_format text                         NOT NULL DEFAULT 'csv'
        CONSTRAINT export_schedules_output_format CHECK (output_format IN ('csv', 'csv.gz', 'parquet')),
    output_schema text                         NOT NULL DEFAULT 'native'
        CONSTRAINT export_schedules_output_schema CHECK (output_schema IN ('native', 'focus-1.0')),
    enabled       boolean                      NOT NULL DEFAULT true,
    -- The next run not yet made; a tick makes every run up to now and moves it past now.
    next_run_at   timestamptz                  NOT NULL,
    last_run_at   timestamptz,
    last_job_id   uuid,
    created_at    timestamptz                  NOT NULL DEFAULT now(),
    updated_at    timestamptz                  NOT NULL DEFAULT now()
);
CREATE INDEX export_schedules_org_idx ON analytics.export_schedules (org_id, created_at, schedule_id);
CREATE INDEX export_schedules_due_idx ON analytics.export_schedules (next_run_at) WHERE enabled;

-- The schedule a job was made by (kept when the schedule is deleted: the job's history).
ALTER TABLE analytics.export_jobs ADD COLUMN schedule_id uuid;
CREATE UNIQUE INDEX export_jobs_schedule_period_key
    ON analytics.export_jobs (schedule_id, time_range_start, time_range_end)
    WHERE schedule_id IS NOT NULL;
CREATE INDEX export_jobs_schedule_idx
    ON analytics.export_jobs (org_id, schedule_id, initiated_at DESC, job_id DESC)
    WHERE schedule_id IS NOT NULL;
