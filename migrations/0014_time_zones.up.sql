-- Time zones: a job is bucketed in its time zone's calendar (an IANA name; 'UTC' by default, as
-- every job before this). Daily and monthly buckets are local days and months, summed from the
-- hourly rollups (their UTC days are not the zone's), and bucket_start is written with the zone's
-- offset at that instant. UTC exports keep their bytes: the 'Z' format and the daily rollups.
ALTER TABLE analytics.export_jobs ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';

-- RFC 3339 of t in zone tz: '2026-10-25T00:00:00+02:00', or '...Z' in UTC. Not STRICT, so the
-- export queries inline it.
CREATE FUNCTION analytics.rfc3339_in(t timestamptz, tz text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
SELECT CASE
    WHEN tz = 'UTC' THEN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
    WHEN (t AT TIME ZONE tz) < (t AT TIME ZONE 'UTC')
        THEN to_char(t AT TIME ZONE tz, 'YYYY-MM-DD"T"HH24:MI:SS')
             || to_char((t AT TIME ZONE tz) - (t AT TIME ZONE 'UTC'), 'HH24:MI')
    ELSE to_char(t AT TIME ZONE tz, 'YYYY-MM-DD"T"HH24:MI:SS')
         || '+' || to_char((t AT TIME ZONE tz) - (t AT TIME ZONE 'UTC'), 'HH24:MI')
END
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
