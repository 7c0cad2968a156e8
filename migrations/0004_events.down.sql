DROP TRIGGER IF EXISTS export_jobs_events ON analytics.export_jobs;
DROP FUNCTION IF EXISTS analytics.record_export_event();
DROP TABLE IF EXISTS analytics.export_events;
DROP FUNCTION IF EXISTS analytics.export_events_append_only();
