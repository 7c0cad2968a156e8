-- No webhooks: endpoints, deliveries and their attempts go with the trigger that made them.
DROP TRIGGER export_jobs_webhooks ON analytics.export_jobs;
DROP FUNCTION analytics.job_finished_webhooks();
DROP FUNCTION analytics.enqueue_webhook_deliveries(uuid, uuid, text, jsonb);
DROP TABLE analytics.webhook_attempts;
DROP TABLE analytics.webhook_deliveries;
DROP TABLE analytics.webhook_endpoints;
