-- The rollup tables are an input, named by settings (ROLLUP_HOURLY_TABLE, ROLLUP_DAILY_TABLE): the
-- export queries read them by those names, so the functions that read them by fixed names go
-- (a database migrated before this has them; no code calls them).
DROP FUNCTION IF EXISTS analytics.covered_days(uuid, timestamptz, timestamptz, text[]);
DROP FUNCTION IF EXISTS analytics.covered_local(uuid, timestamptz, timestamptz, text[], text, text);
