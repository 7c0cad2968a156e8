DROP TABLE IF EXISTS analytics.export_jobs;
DROP TYPE IF EXISTS analytics.export_status;
DROP TYPE IF EXISTS analytics.export_granularity;
DROP TABLE IF EXISTS analytics.daily_rollups;
DROP TABLE IF EXISTS analytics.hourly_rollups;
DROP SCHEMA IF EXISTS analytics;
