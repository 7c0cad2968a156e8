DROP FUNCTION analytics.covered_days(uuid, timestamptz, timestamptz, text[]);
