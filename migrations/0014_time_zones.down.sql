DROP FUNCTION analytics.rfc3339_in(timestamptz, text);
ALTER TABLE analytics.export_jobs DROP COLUMN time_zone;
