-- Back to exports made only on request (their jobs stay, without the schedule's id); the audit
-- trigger as migration 0016 left it.
DROP INDEX analytics.export_jobs_schedule_idx;
DROP INDEX analytics.export_jobs_schedule_period_key;
ALTER TABLE analytics.export_jobs DROP COLUMN schedule_id;
DROP TABLE analytics.export_schedules;

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
                                    'schema', NEW.output_schema);
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
