-- PostgreSQL cannot drop an enum value: rebuild the type without 'cancelled'. Cancelled jobs
-- become failed (with the reason kept), which is what they were before cancellation existed.
UPDATE analytics.export_jobs
SET status = 'failed', error_message = coalesce(error_message, 'cancelled')
WHERE status = 'cancelled';

DROP TRIGGER export_jobs_events ON analytics.export_jobs;
DROP INDEX analytics.export_jobs_active_status_idx;
DROP INDEX analytics.export_jobs_succeeded_expiry_idx;
DROP INDEX analytics.export_jobs_running_lease_idx;
DROP INDEX analytics.export_jobs_leftover_upload_idx;
ALTER TABLE analytics.export_jobs DROP CONSTRAINT export_jobs_succeeded_complete;
ALTER TABLE analytics.export_jobs ALTER COLUMN status DROP DEFAULT;
ALTER TYPE analytics.export_status RENAME TO export_status_with_cancelled;
CREATE TYPE analytics.export_status AS ENUM ('pending', 'running', 'succeeded', 'failed', 'expired');
ALTER TABLE analytics.export_jobs
    ALTER COLUMN status TYPE analytics.export_status USING status::text::analytics.export_status;
ALTER TABLE analytics.export_jobs ALTER COLUMN status SET DEFAULT 'pending';
DROP TYPE analytics.export_status_with_cancelled;
ALTER TABLE analytics.export_jobs ADD CONSTRAINT export_jobs_succeeded_complete CHECK (
    status <> 'succeeded'
    OR (output_uri IS NOT NULL AND checksum IS NOT NULL AND row_count IS NOT NULL
        AND completed_at IS NOT NULL AND expires_at IS NOT NULL)
);
CREATE INDEX export_jobs_active_status_idx ON analytics.export_jobs (status)
    WHERE status IN ('pending', 'running');
CREATE INDEX export_jobs_succeeded_expiry_idx ON analytics.export_jobs (expires_at)
    WHERE status = 'succeeded';
CREATE INDEX export_jobs_running_lease_idx ON analytics.export_jobs (lease_expires_at)
    WHERE status = 'running';
CREATE INDEX export_jobs_leftover_upload_idx ON analytics.export_jobs (updated_at)
    WHERE upload_id IS NOT NULL AND status IN ('failed', 'succeeded', 'expired');

ALTER TABLE analytics.export_jobs DROP COLUMN cancel_requested_at;

-- The event trigger as migration 0004 left it.
CREATE OR REPLACE FUNCTION analytics.record_export_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind    text;
    who     text;
    extra   jsonb := '{}';
BEGIN
    IF TG_OP = 'INSERT' THEN
        kind := 'created';
        who := NEW.requested_by;
        extra := jsonb_build_object('granularity', NEW.granularity, 'start', NEW.time_range_start,
                                    'end', NEW.time_range_end, 'models', to_jsonb(NEW.models));
    ELSIF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NEW;
    ELSIF NEW.status = 'running' THEN
        kind := 'started';
        who := NEW.claimed_by;
    ELSIF NEW.status = 'succeeded' THEN
        kind := 'succeeded';
        who := NEW.claimed_by;
        extra := jsonb_build_object('rowCount', NEW.row_count, 'byteCount', NEW.byte_count,
                                    'checksum', NEW.checksum, 'outputUri', NEW.output_uri);
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
    ELSIF NEW.status = 'expired' THEN
        kind := 'expired';
    ELSE
        kind := NEW.status::text;
    END IF;
    INSERT INTO analytics.export_events (job_id, org_id, event, actor, client_ip, user_agent, attempt, details)
    VALUES (NEW.job_id, NEW.org_id, kind, who,
            CASE WHEN TG_OP = 'INSERT' THEN nullif(current_setting('analytics.client_ip', true), '') END,
            CASE WHEN TG_OP = 'INSERT' THEN nullif(current_setting('analytics.user_agent', true), '') END,
            NEW.attempt, extra);
    RETURN NEW;
END $$;

CREATE TRIGGER export_jobs_events
    AFTER INSERT OR UPDATE OF status ON analytics.export_jobs
    FOR EACH ROW EXECUTE FUNCTION analytics.record_export_event();
