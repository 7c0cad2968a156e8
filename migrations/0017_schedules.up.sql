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

-- The audit trail's 'created' event names the schedule that made a job.
CREATE OR REPLACE FUNCTION analytics.record_export_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind    text;
    who     text;
    extra   jsonb := '{}';
    witness boolean := false;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.cancel_requested_at IS NOT NULL AND OLD.cancel_requested_at IS NULL THEN
        -- Who asked, from where: the API's caller, in the same transaction as the request.
        INSERT INTO analytics.export_events
            (job_id, org_id, event, actor, client_ip, user_agent, attempt, details)
        VALUES (NEW.job_id, NEW.org_id, 'cancel_requested',
                nullif(current_setting('analytics.actor', true), ''),
                nullif(current_setting('analytics.client_ip', true), ''),
                nullif(current_setting('analytics.user_agent', true), ''),
                NEW.attempt, jsonb_build_object('status', OLD.status));
    END IF;
    IF TG_OP = 'INSERT' THEN
        kind := 'created';
        who := NEW.requested_by;
        witness := true;
        extra := jsonb_build_object('granularity', NEW.granularity, 'start', NEW.time_range_start,
                                    'end', NEW.time_range_end, 'models', to_jsonb(NEW.models),
                                    'timeZone', NEW.time_zone, 'format', NEW.output_format,
                                    'schema', NEW.output_schema)
                 || CASE WHEN NEW.schedule_id IS NULL THEN '{}'::jsonb
                         ELSE jsonb_build_object('scheduleId', NEW.schedule_id) END;
    ELSIF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NEW;
    ELSIF NEW.status = 'running' THEN
        kind := 'started';
        who := NEW.claimed_by;
    ELSIF NEW.status = 'succeeded' THEN
        kind := 'succeeded';
        who := NEW.claimed_by;
        extra := jsonb_build_object('rowCount', NEW.row_count, 'byteCount', NEW.byte_count,
                                    'checksum', NEW.checksum, 'outputUri', NEW.output_uri,
                                    'manifestChecksum', NEW.manifest_checksum);
    ELSIF NEW.status = 'failed' THEN
        kind := 'failed';
        who := NEW.claimed_by;
        extra := jsonb_build_object('reason', NEW.error_message);
    ELSIF NEW.status = 'pending' AND NEW.handbacks > OLD.handbacks THEN
        kind := 'handed_back';
        who := OLD.claimed_by;
    ELSIF NEW.status = 'pending' THEN
        kind := 'retried';
        who := OLD.claimed_by;
        extra := jsonb_build_object('reason', NEW.error_message, 'availableAt', NEW.available_at);
    ELSIF NEW.status = 'cancelled' THEN
        kind := 'cancelled';
        who := coalesce(nullif(current_setting('analytics.actor', true), ''), OLD.claimed_by);
        witness := nullif(current_setting('analytics.actor', true), '') IS NOT NULL;
        extra := jsonb_build_object('requestedAt', NEW.cancel_requested_at, 'from', OLD.status);
    ELSE
        kind := NEW.status::text;
    END IF;
    INSERT INTO analytics.export_events (job_id, org_id, event, actor, client_ip, user_agent, attempt, details)
    VALUES (NEW.job_id, NEW.org_id, kind, who,
            CASE WHEN witness THEN nullif(current_setting('analytics.client_ip', true), '') END,
            CASE WHEN witness THEN nullif(current_setting('analytics.user_agent', true), '') END,
            NEW.attempt, extra);
    RETURN NEW;
END $$;
