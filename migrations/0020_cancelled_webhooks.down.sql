-- No export.cancelled: its deliveries go, and endpoints stop subscribing to it (refused while an
-- endpoint subscribes to nothing else: delete or change it first).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM analytics.webhook_endpoints WHERE events <@ ARRAY['export.cancelled']) THEN
        RAISE EXCEPTION 'a webhook endpoint subscribes only to export.cancelled'
            USING HINT = 'delete it, or PATCH its events, before rolling back';
    END IF;
END
$$;
DROP TRIGGER export_jobs_webhooks ON analytics.export_jobs;
CREATE TRIGGER export_jobs_webhooks
    AFTER UPDATE OF status ON analytics.export_jobs
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status AND NEW.status::text IN ('succeeded', 'failed'))
    EXECUTE FUNCTION analytics.job_finished_webhooks();
DELETE FROM analytics.webhook_deliveries WHERE event = 'export.cancelled';
UPDATE analytics.webhook_endpoints SET events = array_remove(events, 'export.cancelled')
 WHERE 'export.cancelled' = ANY (events);
ALTER TABLE analytics.webhook_deliveries
    DROP CONSTRAINT webhook_deliveries_event,
    ADD CONSTRAINT webhook_deliveries_event
        CHECK (event IN ('export.succeeded', 'export.failed', 'export.restated'));
ALTER TABLE analytics.webhook_endpoints
    DROP CONSTRAINT webhook_endpoints_events,
    ADD CONSTRAINT webhook_endpoints_events
        CHECK (cardinality(events) > 0
               AND events <@ ARRAY['export.succeeded', 'export.failed', 'export.restated']);
