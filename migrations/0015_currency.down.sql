-- Back to one currency-less row per org, hour (or day) and model: refused while any key holds rows
-- of two currencies (their sum would mix money), since the old primary key cannot be rebuilt.
DROP FUNCTION analytics.covered_days(uuid, timestamptz, timestamptz, text[]);
DROP FUNCTION analytics.covered_local(uuid, timestamptz, timestamptz, text[], text, text);
ALTER TABLE analytics.hourly_rollups
    DROP CONSTRAINT hourly_rollups_pkey,
    ADD CONSTRAINT hourly_rollups_pkey PRIMARY KEY (org_id, bucket_start, model_id);
ALTER TABLE analytics.daily_rollups
    DROP CONSTRAINT daily_rollups_pkey,
    ADD CONSTRAINT daily_rollups_pkey PRIMARY KEY (org_id, bucket_start, model_id);
ALTER TABLE analytics.hourly_rollups DROP COLUMN currency;
ALTER TABLE analytics.daily_rollups DROP COLUMN currency;

CREATE FUNCTION analytics.covered_days(org uuid, first timestamptz, last timestamptz, models text[])
RETURNS TABLE (day timestamptz, org_id uuid, model_id text, request_count bigint, tokens_total bigint,
               error_count bigint, cost_total numeric)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH whole AS (
        -- The whole UTC days inside [first, last): from the first midnight at or after first to
        -- the last midnight at or before last (none when they cross).
        SELECT CASE WHEN start_day = first THEN first ELSE start_day + interval '24 hours' END AS s,
               date_trunc('day', last AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS e
        FROM (SELECT date_trunc('day', first AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS start_day) AS d
    )
    SELECT r.bucket_start, r.org_id, r.model_id, r.request_count, r.tokens_total, r.error_count, r.cost_total
    FROM analytics.daily_rollups r, whole
    WHERE r.org_id = org AND r.bucket_start >= whole.s AND r.bucket_start < whole.e
      AND (models IS NULL OR r.model_id = ANY (models))
    UNION ALL
    SELECT date_trunc('day', h.bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', h.org_id, h.model_id,
           sum(h.request_count)::bigint, sum(h.tokens_total)::bigint, sum(h.error_count)::bigint,
           sum(h.cost_total)
    FROM analytics.hourly_rollups h, whole
    WHERE h.org_id = org AND h.bucket_start >= first AND h.bucket_start < last
      AND NOT (h.bucket_start >= whole.s AND h.bucket_start < whole.e)
      AND (models IS NULL OR h.model_id = ANY (models))
    GROUP BY 1, h.org_id, h.model_id
$$;

-- One row per local day or month ('day' or 'month') of zone tz and model: the sums of exactly the
-- hourly rollups in [first, last), each bucket starting at its local midnight.
CREATE FUNCTION analytics.covered_local(
    org uuid, first timestamptz, last timestamptz, models text[], tz text, unit text
)
RETURNS TABLE (bucket timestamptz, org_id uuid, model_id text, request_count bigint, tokens_total bigint,
               error_count bigint, cost_total numeric)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT date_trunc(unit, h.bucket_start AT TIME ZONE tz) AT TIME ZONE tz, h.org_id, h.model_id,
           sum(h.request_count)::bigint, sum(h.tokens_total)::bigint, sum(h.error_count)::bigint,
           sum(h.cost_total)
    FROM analytics.hourly_rollups h
    WHERE h.org_id = org AND h.bucket_start >= first AND h.bucket_start < last
      AND (models IS NULL OR h.model_id = ANY (models))
    GROUP BY 1, h.org_id, h.model_id
$$;
