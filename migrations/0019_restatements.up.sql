-- Restatements (issue 16). A scheduled export whose period's totals change after it was delivered
-- (late usage) is exported again: a new job of the same schedule and period that names the job it
-- restates (which stays). One restatement per job; the newest of a chain is the one compared.
ALTER TABLE analytics.export_jobs
    ADD COLUMN restatement_of    uuid REFERENCES analytics.export_jobs (job_id),
    -- When the restatement tick last compared the job's delivered totals with the rollups.
    ADD COLUMN totals_checked_at timestamptz;

CREATE UNIQUE INDEX export_jobs_restatement_key ON analytics.export_jobs (restatement_of)
    WHERE restatement_of IS NOT NULL;
-- A schedule's period has one original job; its restatements are told apart by restatement_of.
DROP INDEX analytics.export_jobs_schedule_period_key;
CREATE UNIQUE INDEX export_jobs_schedule_period_key
    ON analytics.export_jobs (schedule_id, time_range_start, time_range_end)
    WHERE schedule_id IS NOT NULL AND restatement_of IS NULL;
-- The tick's candidates: delivered scheduled exports, the least recently checked first.
CREATE INDEX export_jobs_totals_check_idx ON analytics.export_jobs (totals_checked_at NULLS FIRST)
    WHERE schedule_id IS NOT NULL AND status IN ('succeeded', 'expired');

-- A restatement that succeeds is announced as export.restated (naming the job it restates), not
-- as export.succeeded.
CREATE OR REPLACE FUNCTION analytics.job_finished_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'succeeded' AND NEW.restatement_of IS NOT NULL THEN
        PERFORM analytics.enqueue_webhook_deliveries(
            NEW.org_id, NEW.job_id, 'export.restated',
            jsonb_build_object('restatementOf', NEW.restatement_of));
    ELSE
        PERFORM analytics.enqueue_webhook_deliveries(
            NEW.org_id, NEW.job_id, 'export.' || NEW.status::text, '{}'::jsonb);
    END IF;
    RETURN NULL;
END $$;
