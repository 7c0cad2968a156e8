-- The first-character rule of migration 0003.
CREATE OR REPLACE FUNCTION analytics.csv_safe(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT CASE WHEN value ~ '^[=+@\t\r-]' THEN '''' || value ELSE value END $$;
