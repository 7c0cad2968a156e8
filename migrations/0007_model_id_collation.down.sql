ALTER TABLE analytics.hourly_rollups ALTER COLUMN model_id TYPE text COLLATE "default";
ALTER TABLE analytics.daily_rollups ALTER COLUMN model_id TYPE text COLLATE "default";
