-- Back to exports made only on request (their jobs stay, without the schedule's id).
DROP INDEX analytics.export_jobs_schedule_idx;
DROP INDEX analytics.export_jobs_schedule_period_key;
ALTER TABLE analytics.export_jobs DROP COLUMN schedule_id;
DROP TABLE analytics.export_schedules;
