-- Download links issued again and again to the same caller (same subject, address and user
-- agent) within a short window are one 'download_url_issued' event with a count, so a script that
-- polls /download cannot grow the trail without bound. That count is the one thing in the trail
-- that may change: it only grows, with lastIssuedAt; every other field of every event stays as
-- written.
CREATE OR REPLACE FUNCTION analytics.export_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.event = 'download_url_issued'
       AND (NEW.event_id, NEW.job_id, NEW.org_id, NEW.event, NEW.actor, NEW.client_ip, NEW.user_agent,
            NEW.attempt, NEW.occurred_at)
           IS NOT DISTINCT FROM
           (OLD.event_id, OLD.job_id, OLD.org_id, OLD.event, OLD.actor, OLD.client_ip, OLD.user_agent,
            OLD.attempt, OLD.occurred_at)
       AND NEW.details - 'count' - 'lastIssuedAt' = OLD.details - 'count' - 'lastIssuedAt'
       AND (NEW.details ->> 'count')::bigint > coalesce((OLD.details ->> 'count')::bigint, 1)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'analytics.export_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
