DROP TABLE IF EXISTS analytics.export_jobs;
DROP TYPE IF EXISTS analytics.export_status;
DROP TYPE IF EXISTS analytics.export_granularity;
-- The schema goes only if nothing else is in it: `migrate up --with-rollups` puts its rollup
-- tables there, and they are not this service's to drop.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'analytics') THEN
        DROP SCHEMA IF EXISTS analytics;
    END IF;
END
$$;
