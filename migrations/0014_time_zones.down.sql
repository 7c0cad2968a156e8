DROP FUNCTION analytics.covered_local(uuid, timestamptz, timestamptz, text[], text, text);
DROP FUNCTION analytics.rfc3339_in(timestamptz, text);
ALTER TABLE analytics.export_jobs DROP COLUMN time_zone;
