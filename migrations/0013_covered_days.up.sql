-- Exact coverage: a daily or monthly export counts exactly the hourly buckets inside its coverage
-- [first, last) (whole hours, service/job.py Coverage), whatever day the range starts or ends in.
-- covered_days gives one row per UTC day and model: whole days from the daily rollups; the days at
-- the edges that are only partly covered, summed from their covered hours of the hourly rollups,
-- with the day's own start as bucket_start. Monthly exports sum these rows per month.
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
