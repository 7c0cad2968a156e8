-- Time zones: a job is bucketed in its time zone's calendar (an IANA name; 'UTC' by default, as
-- every job before this). bucket_start is written with the zone's offset at that instant
-- (service/sql/rollups.sql sums local days and months from the hourly rollups).
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
