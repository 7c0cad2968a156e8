DROP FUNCTION IF EXISTS analytics.csv_safe(text);
