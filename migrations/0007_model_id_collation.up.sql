-- Exports order rows by model_id in code-point order (COLLATE "C"), so the order is the same on
-- every server whatever its locale. With the column in the database's default collation the
-- primary key cannot deliver that order and every export sorted its rows again; measured on
-- 1,488,000 rows, COPY of the export query took 2.9 s with the sort and 1.85 s without.
-- Declaring the column COLLATE "C" makes the primary key (org_id, bucket_start, model_id) serve
-- the export order directly. Equality is unchanged (both collations are deterministic).
-- On a large table this rebuilds the primary key index: run it in a quiet window.
ALTER TABLE analytics.hourly_rollups ALTER COLUMN model_id TYPE text COLLATE "C";
ALTER TABLE analytics.daily_rollups ALTER COLUMN model_id TYPE text COLLATE "C";
