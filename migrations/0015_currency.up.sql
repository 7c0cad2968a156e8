-- Currency: every cost is in an ISO 4217 currency, stated on its rollup row. Rows already there
-- are in the platform's billing currency, BILLING_CURRENCY (default USD), which the migration
-- runner passes as the setting analytics_exports.billing_currency; it stays the column's default,
-- so a rollup writer that predates the column keeps working (in that currency).
-- The currency joins the primary key: a model of one org can be billed in two currencies in one
-- hour or day (a change of billing currency), and such rows are two rows, never one sum. Declared
-- COLLATE "C" so the key still serves the export order (bucket, model id, currency) directly.
-- On a large table adding the column is instant (a constant default), but the new primary key is
-- an index build under an exclusive lock, as 0007's was: run it in a quiet window.
DO $$
DECLARE
    billing text := current_setting('analytics_exports.billing_currency', true);
BEGIN
    IF billing IS NULL OR billing !~ '^[A-Z]{3}$' THEN
        RAISE EXCEPTION 'the billing currency must be three capital letters (ISO 4217), not %',
            coalesce(quote_literal(billing), 'unset')
            USING HINT = 'run migrations with `analytics-exports migrate up` and BILLING_CURRENCY set';
    END IF;
    EXECUTE format('ALTER TABLE analytics.hourly_rollups ADD COLUMN currency char(3) COLLATE "C" NOT NULL'
                   ' DEFAULT %L CONSTRAINT hourly_rollups_currency_iso CHECK (currency ~ ''^[A-Z]{3}$'')',
                   billing);
    EXECUTE format('ALTER TABLE analytics.daily_rollups ADD COLUMN currency char(3) COLLATE "C" NOT NULL'
                   ' DEFAULT %L CONSTRAINT daily_rollups_currency_iso CHECK (currency ~ ''^[A-Z]{3}$'')',
                   billing);
END
$$;
ALTER TABLE analytics.hourly_rollups
    DROP CONSTRAINT hourly_rollups_pkey,
    ADD CONSTRAINT hourly_rollups_pkey PRIMARY KEY (org_id, bucket_start, model_id, currency);
ALTER TABLE analytics.daily_rollups
    DROP CONSTRAINT daily_rollups_pkey,
    ADD CONSTRAINT daily_rollups_pkey PRIMARY KEY (org_id, bucket_start, model_id, currency);

-- The covered rows now carry their currency, and it is part of every grouping key.
DROP FUNCTION analytics.covered_days(uuid, timestamptz, timestamptz, text[]);
DROP FUNCTION analytics.covered_local(uuid, timestamptz, timestamptz, text[], text, text);

-- One row per UTC day, model and currency of exactly the hours in [first, last): whole days from
-- the daily rollups; the days at the edges that are only partly covered, summed from their
-- covered hours of the hourly rollups, with the day's own start as bucket_start.
CREATE FUNCTION analytics.covered_days(org uuid, first timestamptz, last timestamptz, models text[])
RETURNS TABLE (day timestamptz, org_id uuid, model_id text, request_count bigint, tokens_total bigint,
               error_count bigint, cost_total numeric, currency char(3))
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH whole AS (
        -- The whole UTC days inside [first, last): from the first midnight at or after first to
        -- the last midnight at or before last (none when they cross).
        SELECT CASE WHEN start_day = first THEN first ELSE start_day + interval '24 hours' END AS s,
               date_trunc('day', last AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS e
        FROM (SELECT date_trunc('day', first AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS start_day) AS d
    )
    SELECT r.bucket_start, r.org_id, r.model_id, r.request_count, r.tokens_total, r.error_count,
           r.cost_total, r.currency
    FROM analytics.daily_rollups r, whole
    WHERE r.org_id = org AND r.bucket_start >= whole.s AND r.bucket_start < whole.e
      AND (models IS NULL OR r.model_id = ANY (models))
    UNION ALL
    SELECT date_trunc('day', h.bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', h.org_id, h.model_id,
           sum(h.request_count)::bigint, sum(h.tokens_total)::bigint, sum(h.error_count)::bigint,
           sum(h.cost_total), h.currency
    FROM analytics.hourly_rollups h, whole
    WHERE h.org_id = org AND h.bucket_start >= first AND h.bucket_start < last
      AND NOT (h.bucket_start >= whole.s AND h.bucket_start < whole.e)
      AND (models IS NULL OR h.model_id = ANY (models))
    GROUP BY 1, h.org_id, h.model_id, h.currency
$$;

-- One row per local day or month ('day' or 'month') of zone tz, model and currency: the sums of
-- exactly the hourly rollups in [first, last), each bucket starting at its local midnight.
CREATE FUNCTION analytics.covered_local(
    org uuid, first timestamptz, last timestamptz, models text[], tz text, unit text
)
RETURNS TABLE (bucket timestamptz, org_id uuid, model_id text, request_count bigint, tokens_total bigint,
               error_count bigint, cost_total numeric, currency char(3))
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT date_trunc(unit, h.bucket_start AT TIME ZONE tz) AT TIME ZONE tz, h.org_id, h.model_id,
           sum(h.request_count)::bigint, sum(h.tokens_total)::bigint, sum(h.error_count)::bigint,
           sum(h.cost_total), h.currency
    FROM analytics.hourly_rollups h
    WHERE h.org_id = org AND h.bucket_start >= first AND h.bucket_start < last
      AND (models IS NULL OR h.model_id = ANY (models))
    GROUP BY 1, h.org_id, h.model_id, h.currency
$$;
