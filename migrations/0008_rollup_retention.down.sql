DROP INDEX IF EXISTS analytics.daily_rollups_retention_idx;
DROP INDEX IF EXISTS analytics.hourly_rollups_retention_idx;
