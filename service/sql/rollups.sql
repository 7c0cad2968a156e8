-- Named queries of the rollup tables, loaded by service.sql like queries.sql: templates, as the
-- tables are named by settings (ROLLUP_HOURLY_TABLE, ROLLUP_DAILY_TABLE). What reads a table
-- states its counts as bigint and its costs as numeric(20,6) (six decimals, whatever exact numeric
-- the platform's column is: service/rollups.py admits only those it holds exactly). {hourly_rollups} and
-- {daily_rollups} stand for the tables, quoted; {covered_days} and {local_days} for the fragments
-- of the same names below, in parentheses. Nothing here is a function in the database, so the
-- service's migrations name no rollup table.

-- name: covered_days
-- Fragment: one row per UTC day, model and currency of exactly the hours in [$2, $3) of org $1,
-- models $4 (all: NULL): the whole UTC days [$5, $6) from the daily rollups; the hours of [$2, $5)
-- and [$6, $3), the days only partly covered, summed from the hourly rollups with the day's own
-- start as bucket (service/repository.py whole_days gives $5 and $6; both bounds sargable).
SELECT d.bucket_start AS day, d.org_id, d.model_id, d.request_count::bigint AS request_count,
       d.tokens_total::bigint AS tokens_total, d.error_count::bigint AS error_count,
       d.cost_total::numeric(20,6) AS cost_total, d.currency::text AS currency
FROM {daily_rollups} d
WHERE d.org_id = $1 AND d.bucket_start >= $5 AND d.bucket_start < $6
  AND ($4::text[] IS NULL OR d.model_id = ANY ($4::text[]))
UNION ALL
SELECT date_trunc('day', h.bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', h.org_id, h.model_id,
       sum(h.request_count)::bigint, sum(h.tokens_total)::bigint, sum(h.error_count)::bigint,
       sum(h.cost_total::numeric(20,6)), h.currency::text
FROM {hourly_rollups} h
WHERE h.org_id = $1
  AND ((h.bucket_start >= $2 AND h.bucket_start < $5) OR (h.bucket_start >= $6 AND h.bucket_start < $3))
  AND ($4::text[] IS NULL OR h.model_id = ANY ($4::text[]))
GROUP BY 1, h.org_id, h.model_id, h.currency

-- name: local_days
-- Fragment: one row per day of zone $7, model and currency: the sums of exactly the hourly rollups
-- of org $1 in [$2, $3), models $4, each day starting at its local midnight.
SELECT date_trunc('day', h.bucket_start AT TIME ZONE $7::text) AT TIME ZONE $7::text AS day, h.org_id,
       h.model_id, sum(h.request_count)::bigint AS request_count, sum(h.tokens_total)::bigint AS tokens_total,
       sum(h.error_count)::bigint AS error_count, sum(h.cost_total::numeric(20,6)) AS cost_total,
       h.currency::text AS currency
FROM {hourly_rollups} h
WHERE h.org_id = $1 AND h.bucket_start >= $2 AND h.bucket_start < $3
  AND ($4::text[] IS NULL OR h.model_id = ANY ($4::text[]))
GROUP BY 1, h.org_id, h.model_id, h.currency

-- name: prune_hourly_rollups
-- Delete at most $2 hourly rollups whose bucket_start is before $1 (the retention cutoff), oldest
-- first (ROLLUP_PRUNE). Written on bucket_start AT TIME ZONE 'UTC' so it uses the retention index
-- of the --with-rollups tables (migrations/rollup_tables.sql).
DELETE FROM {hourly_rollups}
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM {hourly_rollups}
    WHERE (bucket_start AT TIME ZONE 'UTC') < ($1::timestamptz AT TIME ZONE 'UTC')
    ORDER BY (bucket_start AT TIME ZONE 'UTC')
    LIMIT $2
));

-- name: prune_daily_rollups
-- The same of the daily rollups.
DELETE FROM {daily_rollups}
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM {daily_rollups}
    WHERE (bucket_start AT TIME ZONE 'UTC') < ($1::timestamptz AT TIME ZONE 'UTC')
    ORDER BY (bucket_start AT TIME ZONE 'UTC')
    LIMIT $2
));

-- name: export_hourly
-- CSV rows of the hourly rollups in the coverage [$2, $3) (whole hours) of org $1, models $4 (all:
-- NULL), bucket_start in zone $5; COPY-able. With $6 (files a spreadsheet may open: CSV) text
-- cells go through csv_safe (formula injection), else (Parquet) they are as recorded; numbers are
-- never touched; order is by the raw id in code points, then currency.
SELECT analytics.rfc3339_in(h.bucket_start, $5) AS bucket_start,
       h.org_id AS organization_id,
       CASE WHEN $6 THEN analytics.csv_safe(h.model_id) ELSE h.model_id END AS model_id,
       h.request_count::bigint AS request_count, h.tokens_total::bigint AS tokens_total,
       h.error_count::bigint AS error_count, h.cost_total::numeric(20,6) AS cost_total,
       h.currency::text AS currency
FROM {hourly_rollups} h
WHERE h.org_id = $1 AND h.bucket_start >= $2 AND h.bucket_start < $3
  AND ($4::text[] IS NULL OR h.model_id = ANY ($4::text[]))
ORDER BY h.bucket_start, h.model_id COLLATE "C", h.currency COLLATE "C";

-- name: export_daily
-- CSV rows per day of zone $7, model and currency of exactly the hours in the coverage [$2, $3) of
-- org $1, models $4, whole UTC days [$5, $6); COPY-able; $8 as export_hourly's $6. UTC days:
-- covered_days; any other zone: local_days.
SELECT analytics.rfc3339_in(day, $7) AS bucket_start,
       org_id AS organization_id, CASE WHEN $8 THEN analytics.csv_safe(model_id) ELSE model_id END AS model_id,
       request_count, tokens_total, error_count, cost_total, currency
FROM (
    SELECT * FROM {covered_days} AS utc WHERE $7::text = 'UTC'
    UNION ALL
    SELECT * FROM {local_days} AS local WHERE $7::text <> 'UTC'
) AS days
ORDER BY day, model_id COLLATE "C", currency COLLATE "C";

-- name: export_monthly
-- CSV rows per month of zone $7 (the sums of its days), as export_daily takes them; COPY-able.
SELECT analytics.rfc3339_in(month, $7) AS bucket_start,
       org_id AS organization_id, CASE WHEN $8 THEN analytics.csv_safe(model_id) ELSE model_id END AS model_id,
       request_count, tokens_total, error_count, cost_total, currency
FROM (
    SELECT date_trunc('month', day AT TIME ZONE $7::text) AT TIME ZONE $7::text AS month, org_id, model_id,
           sum(request_count)::bigint AS request_count, sum(tokens_total)::bigint AS tokens_total,
           sum(error_count)::bigint AS error_count, sum(cost_total) AS cost_total, currency
    FROM (
        SELECT * FROM {covered_days} AS utc WHERE $7::text = 'UTC'
        UNION ALL
        SELECT * FROM {local_days} AS local WHERE $7::text <> 'UTC'
    ) AS days
    GROUP BY 1, org_id, model_id, currency
) AS monthly
ORDER BY month, model_id COLLATE "C", currency COLLATE "C";

-- name: export_focus
-- The FOCUS 1.0 dataset (FinOps Open Cost and Usage Specification) of the same rows, COPY-able:
-- one row per bucket ($8: 'hourly', 'daily' or 'monthly', in UTC as FOCUS requires), model and
-- currency of exactly the hours in the coverage [$2, $3) of org $1, models $4 (whole UTC days
-- [$5, $6)); $7 makes text cells spreadsheet-safe. ChargePeriod is the covered part of the bucket;
-- BillingPeriod its UTC month. Provider, publisher and invoice issuer are $9, the service $10.
-- The rollups hold no unit prices, so the conditional columns ListUnitPrice, ContractedUnitPrice
-- and SkuPriceId are left out (docs/api.md). Date-times as YYYY-MM-DDTHH:MM:SSZ; quantities with
-- six decimals.
SELECT NULL::text AS "AvailabilityZone",
       cost_total AS "BilledCost",
       org_id AS "BillingAccountId",
       org_id AS "BillingAccountName",
       currency AS "BillingCurrency",
       to_char(date_trunc('month', charge_start AT TIME ZONE 'UTC') + interval '1 month',
               'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "BillingPeriodEnd",
       to_char(date_trunc('month', charge_start AT TIME ZONE 'UTC'), 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
           AS "BillingPeriodStart",
       'Usage' AS "ChargeCategory",
       NULL::text AS "ChargeClass",
       CASE WHEN $7 THEN analytics.csv_safe(model_id) ELSE model_id END || ' token usage'
           AS "ChargeDescription",
       'Usage-Based' AS "ChargeFrequency",
       to_char(charge_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "ChargePeriodEnd",
       to_char(charge_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "ChargePeriodStart",
       NULL::text AS "CommitmentDiscountCategory",
       NULL::text AS "CommitmentDiscountId",
       NULL::text AS "CommitmentDiscountName",
       NULL::text AS "CommitmentDiscountStatus",
       NULL::text AS "CommitmentDiscountType",
       tokens_total::numeric(26, 6) AS "ConsumedQuantity",
       'Tokens' AS "ConsumedUnit",
       cost_total AS "ContractedCost",
       cost_total AS "EffectiveCost",
       $9::text AS "InvoiceIssuerName",
       cost_total AS "ListCost",
       'Standard' AS "PricingCategory",
       (tokens_total / 1000000.0)::numeric(26, 6) AS "PricingQuantity",
       '1000000 Tokens' AS "PricingUnit",
       $9::text AS "ProviderName",
       $9::text AS "PublisherName",
       NULL::text AS "RegionId",
       NULL::text AS "RegionName",
       NULL::text AS "ResourceId",
       NULL::text AS "ResourceName",
       NULL::text AS "ResourceType",
       'AI and Machine Learning' AS "ServiceCategory",
       $10::text AS "ServiceName",
       CASE WHEN $7 THEN analytics.csv_safe(model_id) ELSE model_id END AS "SkuId",
       NULL::text AS "SubAccountId",
       NULL::text AS "SubAccountName",
       NULL::text AS "Tags",
       request_count AS "x_RequestCount",
       error_count AS "x_ErrorCount"
FROM (
    SELECT bucket_start AS charge_start, bucket_start + interval '1 hour' AS charge_end, org_id,
           model_id, request_count, tokens_total, error_count, cost_total::numeric(20,6), currency
    FROM {hourly_rollups}
    WHERE $8::text = 'hourly' AND org_id = $1 AND bucket_start >= $2 AND bucket_start < $3
      AND ($4::text[] IS NULL OR model_id = ANY ($4::text[]))
    UNION ALL
    SELECT greatest(day, $2), least(day + interval '1 day', $3), org_id, model_id, request_count,
           tokens_total, error_count, cost_total, currency
    FROM {covered_days} AS days
    WHERE $8::text = 'daily'
    UNION ALL
    SELECT greatest(month, $2), least(month + interval '1 month', $3), org_id, model_id,
           request_count, tokens_total, error_count, cost_total, currency
    FROM (
        SELECT date_trunc('month', day AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month, org_id, model_id,
               sum(request_count) AS request_count, sum(tokens_total) AS tokens_total,
               sum(error_count) AS error_count, sum(cost_total) AS cost_total, currency
        FROM {covered_days} AS days
        WHERE $8::text = 'monthly'
        GROUP BY 1, org_id, model_id, currency
    ) AS months
) AS charges
ORDER BY charge_start, model_id COLLATE "C", currency;

-- name: seed_demo_hourly
-- Demo data (the `migrate up --with-rollups` tables): hourly rollups for org $1, $2 models, every hour from $3 to $4 (deterministic values),
-- costs in currency $5.
INSERT INTO {hourly_rollups}
    (bucket_start, org_id, model_id, request_count, tokens_total, error_count, cost_total, currency)
SELECT hour, $1, model,
       requests, requests * (200 + m * 37), requests / 97,
       round(requests * (200 + m * 37) * (0.0000015 + m * 0.0000004), 6), $5
FROM generate_series($3::timestamptz, $4::timestamptz - interval '1 hour', interval '1 hour') AS hour,
     generate_series(1, $2) AS m,
     LATERAL (SELECT (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet', 'claude-haiku', 'llama-3-70b',
                            'mistral-large', 'gemini-pro', 'embed-v3'])[1 + (m - 1) % 8]
                     || CASE WHEN m > 8 THEN '-' || m ELSE '' END AS model,
                     (50 + (extract(epoch FROM hour)::bigint / 3600 * 7919 + m * 104729) % 950)::bigint AS requests
             ) AS v
ON CONFLICT (org_id, bucket_start, model_id, currency) DO NOTHING;

-- name: seed_demo_daily
-- Demo data: daily rollups of org $1 as the exact sums of its hourly rollups per UTC day.
INSERT INTO {daily_rollups}
    (bucket_start, org_id, model_id, request_count, tokens_total, error_count, cost_total, currency)
SELECT date_trunc('day', bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', org_id, model_id,
       sum(request_count), sum(tokens_total), sum(error_count), sum(cost_total), currency
FROM {hourly_rollups}
WHERE org_id = $1
GROUP BY 1, org_id, model_id, currency
ON CONFLICT (org_id, bucket_start, model_id, currency) DO UPDATE
SET request_count = EXCLUDED.request_count, tokens_total = EXCLUDED.tokens_total,
    error_count = EXCLUDED.error_count, cost_total = EXCLUDED.cost_total;

-- name: period_totals_hours
-- The totals per currency of org $1's hourly rollups in [$2, $3), models $4 (all: NULL): what an
-- hourly export, or one of local days or months, counts. One aggregate: a restatement check.
SELECT currency::text AS currency, sum(cost_total) AS cost_total, sum(request_count)::bigint AS request_count,
       sum(tokens_total)::bigint AS tokens_total, sum(error_count)::bigint AS error_count
FROM {hourly_rollups}
WHERE org_id = $1 AND bucket_start >= $2 AND bucket_start < $3
  AND ($4::text[] IS NULL OR model_id = ANY ($4::text[]))
GROUP BY currency;

-- name: period_totals_days
-- The same as covered_days counts them (the whole UTC days [$5, $6) from the daily rollups, the
-- hours of [$2, $5) and [$6, $3) from the hourly ones), without its grouping per day.
SELECT currency::text AS currency, sum(cost_total) AS cost_total, sum(request_count)::bigint AS request_count,
       sum(tokens_total)::bigint AS tokens_total, sum(error_count)::bigint AS error_count
FROM (
    SELECT currency, cost_total, request_count, tokens_total, error_count
    FROM {daily_rollups}
    WHERE org_id = $1 AND bucket_start >= $5 AND bucket_start < $6
      AND ($4::text[] IS NULL OR model_id = ANY ($4::text[]))
    UNION ALL
    SELECT currency, cost_total, request_count, tokens_total, error_count
    FROM {hourly_rollups}
    WHERE org_id = $1
      AND ((bucket_start >= $2 AND bucket_start < $5) OR (bucket_start >= $6 AND bucket_start < $3))
      AND ($4::text[] IS NULL OR model_id = ANY ($4::text[]))
) AS counted
GROUP BY currency;
