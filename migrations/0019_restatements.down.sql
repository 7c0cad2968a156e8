-- No restatements: their jobs stay, as jobs no schedule made (0017's unique index allows a
-- schedule one job per period).
CREATE OR REPLACE FUNCTION analytics.job_finished_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM analytics.enqueue_webhook_deliveries(
        NEW.org_id, NEW.job_id, 'export.' || NEW.status::text, '{}'::jsonb);
    RETURN NULL;
END $$;
DROP INDEX analytics.export_jobs_totals_check_idx;
DROP INDEX analytics.export_jobs_schedule_period_key;
UPDATE analytics.export_jobs SET schedule_id = NULL WHERE restatement_of IS NOT NULL;
CREATE UNIQUE INDEX export_jobs_schedule_period_key
    ON analytics.export_jobs (schedule_id, time_range_start, time_range_end)
    WHERE schedule_id IS NOT NULL;
DROP INDEX analytics.export_jobs_restatement_key;
ALTER TABLE analytics.export_jobs DROP COLUMN totals_checked_at, DROP COLUMN restatement_of;
