DROP TABLE IF EXISTS analytics.export_idempotency;
