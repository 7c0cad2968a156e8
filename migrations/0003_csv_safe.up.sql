-- Spreadsheet-safe text cells (OWASP CSV injection): a cell that starts with =, +, -, @, tab or
-- carriage return is prefixed with a single quote, so Excel and LibreOffice show it as text
-- instead of evaluating it. Only text columns go through it; numeric columns never do, so a
-- negative cost stays a number.
CREATE FUNCTION analytics.csv_safe(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT CASE WHEN value ~ '^[=+@\t\r-]' THEN '''' || value ELSE value END $$;
