ALTER TABLE analytics.export_jobs DROP COLUMN request_id;
