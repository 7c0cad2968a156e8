-- export.cancelled: an export its org cancelled (a schedule's too: a period nobody will get a file
-- for) is announced like a failed one, to the endpoints that subscribe to it.
ALTER TABLE analytics.webhook_endpoints
    DROP CONSTRAINT webhook_endpoints_events,
    ADD CONSTRAINT webhook_endpoints_events
        CHECK (cardinality(events) > 0
               AND events <@ ARRAY['export.succeeded', 'export.failed', 'export.restated', 'export.cancelled']);
ALTER TABLE analytics.webhook_deliveries
    DROP CONSTRAINT webhook_deliveries_event,
    ADD CONSTRAINT webhook_deliveries_event
        CHECK (event IN ('export.succeeded', 'export.failed', 'export.restated', 'export.cancelled'));
DROP TRIGGER export_jobs_webhooks ON analytics.export_jobs;
CREATE TRIGGER export_jobs_webhooks
    AFTER UPDATE OF status ON analytics.export_jobs
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status AND NEW.status::text IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION analytics.job_finished_webhooks();
