-- The audit trail (issue 4): an append-only log of what happened to each export and who did it.
-- Lifecycle events are written by a trigger in the same transaction as the status change, so
-- no code path can change a job without leaving its trace; download_url_issued is written by the
-- API. The API passes the caller's address and user agent for the 'created' event through
-- transaction-local settings (analytics.client_ip, analytics.user_agent).
CREATE TABLE analytics.export_events (
    event_id    bigserial   PRIMARY KEY,
    job_id      uuid        NOT NULL REFERENCES analytics.export_jobs (job_id),
    org_id      uuid        NOT NULL,
    event       text        NOT NULL CHECK (event IN (
                    'created', 'started', 'succeeded', 'failed', 'retried', 'handed_back',
                    'cancelled', 'expired', 'download_url_issued')),
    actor       text,
    client_ip   text,
    user_agent  text,
    attempt     integer,
    details     jsonb       NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX export_events_job_idx ON analytics.export_events (job_id, event_id);

CREATE FUNCTION analytics.export_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'analytics.export_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER export_events_append_only
    BEFORE UPDATE OR DELETE ON analytics.export_events
    FOR EACH ROW EXECUTE FUNCTION analytics.export_events_append_only();

CREATE FUNCTION analytics.record_export_event() RETURNS trigger
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
