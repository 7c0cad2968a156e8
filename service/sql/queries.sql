-- Named queries: every statement the service runs lives here, loaded once by service.sql.
-- A block starts with "-- name: <name>" and a one-line description.

-- name: lock_org_creates
-- Serialise job creation within one org (fairness limit and idempotency keys are race-safe).
SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 727372021));

-- name: find_idempotent_request
-- A live (under 24 h old) idempotency key of the org, with the job it created.
SELECT request_hash, job_id FROM analytics.export_idempotency
WHERE org_id = $1 AND key = $2 AND created_at > now() - interval '24 hours';

-- name: remember_idempotent_request
-- Remember which job a key created (replacing the record of an expired use of the same key).
INSERT INTO analytics.export_idempotency (org_id, key, request_hash, job_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (org_id, key) DO UPDATE
SET request_hash = EXCLUDED.request_hash, job_id = EXCLUDED.job_id, created_at = now();

-- name: count_active_jobs
-- How many of the org's jobs are pending or running.
SELECT count(*) FROM analytics.export_jobs WHERE org_id = $1 AND status IN ('pending', 'running');

-- name: create_job
-- Insert a new pending export job and return it.
INSERT INTO analytics.export_jobs
    (job_id, org_id, requested_by, time_range_start, time_range_end, granularity, models, request_id,
     time_zone, output_format, output_schema)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING *;

-- name: set_caller
-- Transaction-local caller facts, read by the trigger that records 'created' and 'cancelled'.
SELECT set_config('analytics.client_ip', $1, true), set_config('analytics.user_agent', $2, true),
       set_config('analytics.actor', $3, true);

-- name: lock_job_events
-- Serialise the API's writes to one job's trail (download counts stay exact under concurrency).
SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 408112));

-- name: count_download
-- Count one more link in the caller's download_url_issued event of the last $5 seconds, if any.
UPDATE analytics.export_events
SET details = details || jsonb_build_object('count', coalesce((details ->> 'count')::bigint, 1) + 1,
                                            'lastIssuedAt', now())
WHERE event_id = (
    SELECT event_id FROM analytics.export_events
    WHERE job_id = $1 AND event = 'download_url_issued' AND actor IS NOT DISTINCT FROM $2
      AND client_ip IS NOT DISTINCT FROM $3 AND user_agent IS NOT DISTINCT FROM $4
      AND occurred_at > now() - make_interval(secs => $5)
    ORDER BY event_id DESC
    LIMIT 1
)
RETURNING event_id;

-- name: record_event
-- Append an event the API witnessed (download_url_issued) to a job's audit trail.
INSERT INTO analytics.export_events (job_id, org_id, event, actor, client_ip, user_agent, attempt, details)
SELECT job_id, org_id, $2, $3, $4, $5, attempt, $6::jsonb
FROM analytics.export_jobs WHERE job_id = $1;

-- name: list_events
-- A page of a job's audit trail, oldest first, after event $3 (the job must belong to the org).
SELECT e.* FROM analytics.export_events e
WHERE e.job_id = $2 AND e.org_id = $1 AND ($3::bigint IS NULL OR e.event_id > $3)
ORDER BY e.event_id
LIMIT $4;

-- name: get_job
-- One job of one org (another org's job is simply not found).
SELECT * FROM analytics.export_jobs WHERE org_id = $1 AND job_id = $2;

-- name: get_manifest
-- One job of one org and its manifest (NULL until it succeeds).
SELECT j.*, m.manifest AS manifest_text
FROM analytics.export_jobs j LEFT JOIN analytics.export_manifests m USING (job_id)
WHERE j.org_id = $1 AND j.job_id = $2;

-- name: job_exists
-- Whether this database shows job $1 (a replica: whether it has replayed past its creation).
SELECT EXISTS (SELECT 1 FROM analytics.export_jobs WHERE job_id = $1);

-- name: list_jobs
-- An org's jobs, newest first, keyset-paginated on (initiated_at, job_id); optional status and
-- schedule filters.
SELECT * FROM analytics.export_jobs
WHERE org_id = $1
  AND ($2::analytics.export_status IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR (initiated_at, job_id) < ($3, $4::uuid))
  AND ($6::uuid IS NULL OR schedule_id = $6)
ORDER BY initiated_at DESC, job_id DESC
LIMIT $5;

-- name: claim_job
-- Compare-and-set pending -> running with a lease; a duplicate, early or late message finds nothing.
UPDATE analytics.export_jobs
SET status = 'running', attempt = attempt + 1, started_at = now(), updated_at = now(),
    lease_expires_at = now() + make_interval(secs => $2), claimed_by = $3, available_at = NULL
WHERE job_id = $1 AND status = 'pending' AND (available_at IS NULL OR available_at <= now())
RETURNING *;

-- name: renew_lease
-- Heartbeat of the running attempt, telling it whether a cancel was asked for; nothing when the
-- attempt no longer owns the job.
UPDATE analytics.export_jobs
SET lease_expires_at = now() + make_interval(secs => $3)
WHERE job_id = $1 AND status = 'running' AND attempt = $2
RETURNING cancel_requested_at IS NOT NULL AS cancel_requested;

-- name: cancel_job
-- Cancel a job of the org: a pending one at once; a running one is asked to stop (its attempt
-- records 'cancelled'). Nothing when the job is unknown, another org's, or already finished.
UPDATE analytics.export_jobs
SET status = CASE WHEN status = 'pending' THEN 'cancelled'::analytics.export_status ELSE status END,
    completed_at = CASE WHEN status = 'pending' THEN now() ELSE completed_at END,
    cancel_requested_at = coalesce(cancel_requested_at, now()),
    updated_at = now()
WHERE org_id = $1 AND job_id = $2 AND status IN ('pending', 'running')
RETURNING *;

-- name: cancel_running_job
-- running -> cancelled by the attempt that stopped on request (fenced by the attempt number).
UPDATE analytics.export_jobs
SET status = 'cancelled', completed_at = now(), lease_expires_at = NULL, updated_at = now()
WHERE job_id = $1 AND status = 'running' AND attempt = $2
RETURNING *;

-- name: cancel_lapsed_jobs
-- Running jobs asked to cancel whose worker died before it could: cancelled.
UPDATE analytics.export_jobs
SET status = 'cancelled', completed_at = now(), lease_expires_at = NULL, updated_at = now()
WHERE job_id IN (
    SELECT job_id FROM analytics.export_jobs
    WHERE status = 'running' AND lease_expires_at < now() AND cancel_requested_at IS NOT NULL
    ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING job_id;

-- name: set_upload_id
-- Record the multipart upload of the running attempt (fenced by the attempt number).
UPDATE analytics.export_jobs
SET upload_id = $3, updated_at = now()
WHERE job_id = $1 AND status = 'running' AND attempt = $2
RETURNING job_id;

-- name: clear_upload_id
-- Forget an upload once it is aborted (and, for a failed job, its object deleted).
UPDATE analytics.export_jobs SET upload_id = NULL WHERE job_id = $1 AND upload_id = $2;

-- name: complete_job
-- running -> succeeded with the output and its manifest ($8, with its SHA-256 $9), only for the
-- attempt that produced them.
WITH done AS (
    UPDATE analytics.export_jobs
    SET status = 'succeeded', output_uri = $3, checksum = $4, row_count = $5, byte_count = $6,
        completed_at = now(), expires_at = now() + make_interval(secs => $7), upload_id = NULL,
        lease_expires_at = NULL, error_message = NULL, manifest_checksum = $9, updated_at = now()
    WHERE job_id = $1 AND status = 'running' AND attempt = $2
    RETURNING *
), kept AS (
    INSERT INTO analytics.export_manifests (job_id, manifest)
    SELECT job_id, $8 FROM done
    ON CONFLICT (job_id) DO UPDATE SET manifest = EXCLUDED.manifest
)
SELECT * FROM done;

-- name: fail_job
-- running -> failed with a readable reason, only for the attempt that failed (its upload stays
-- recorded until it is aborted).
UPDATE analytics.export_jobs
SET status = 'failed', error_message = $3, completed_at = now(), lease_expires_at = NULL, updated_at = now()
WHERE job_id = $1 AND status = 'running' AND attempt = $2
RETURNING *;

-- name: retry_job
-- running -> pending after a retryable failure; claimable again after $4 seconds of backoff.
UPDATE analytics.export_jobs
SET status = 'pending', error_message = $3, available_at = now() + make_interval(secs => $4),
    enqueued_at = NULL, lease_expires_at = NULL, updated_at = now()
WHERE job_id = $1 AND status = 'running' AND attempt = $2
RETURNING *;

-- name: hand_back_job
-- running -> pending at worker shutdown; a clean hand-back does not count as an attempt.
UPDATE analytics.export_jobs
SET status = 'pending', handbacks = handbacks + 1, available_at = NULL, enqueued_at = NULL,
    lease_expires_at = NULL, updated_at = now()
WHERE job_id = $1 AND status = 'running' AND attempt = $2
RETURNING *;

-- name: requeue_lapsed_jobs
-- Running jobs whose worker stopped renewing the lease, with attempts left: back to pending.
UPDATE analytics.export_jobs
SET status = 'pending', enqueued_at = NULL, available_at = NULL, lease_expires_at = NULL, updated_at = now(),
    error_message = format('attempt %s: worker %s stopped renewing its lease', attempt, claimed_by)
WHERE job_id IN (
    SELECT job_id FROM analytics.export_jobs
    WHERE status = 'running' AND lease_expires_at < now() AND attempt - handbacks < $1
      AND cancel_requested_at IS NULL
    ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING job_id;

-- name: fail_lapsed_jobs
-- Running jobs whose worker stopped renewing the lease and no attempts left: failed for good.
UPDATE analytics.export_jobs
SET status = 'failed', completed_at = now(), lease_expires_at = NULL, updated_at = now(),
    error_message = format('gave up after %s attempts: the last, on worker %s, stopped renewing its lease',
                           attempt - handbacks, claimed_by)
WHERE job_id IN (
    SELECT job_id FROM analytics.export_jobs
    WHERE status = 'running' AND lease_expires_at < now() AND attempt - handbacks >= $1
      AND cancel_requested_at IS NULL
    ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING *;

-- name: jobs_with_leftover_uploads
-- Finished jobs whose multipart upload (or failed or cancelled object) is not cleaned up yet.
SELECT * FROM analytics.export_jobs
WHERE upload_id IS NOT NULL AND status IN ('failed', 'cancelled', 'succeeded', 'expired')
ORDER BY updated_at
LIMIT $1;

-- name: unfinished_job_ids
-- Which of these jobs are still pending or running (their uploads are their own to clean up).
SELECT job_id FROM analytics.export_jobs
WHERE job_id = ANY ($1::uuid[]) AND status IN ('pending', 'running');

-- name: jobs_due_for_expiry
-- Succeeded jobs whose download window has closed, oldest first.
SELECT * FROM analytics.export_jobs
WHERE status = 'succeeded' AND expires_at <= now()
ORDER BY expires_at
LIMIT $1;

-- name: expire_job
-- succeeded -> expired, once its object is deleted.
UPDATE analytics.export_jobs
SET status = 'expired', updated_at = now()
WHERE job_id = $1 AND status = 'succeeded'
RETURNING *;

-- name: stale_pending_jobs
-- Claimable pending jobs with no message: never published (or handed back, or retried) more than
-- $1 s ago, or published more than $2 s ago and still unclaimed (a lost message).
SELECT job_id FROM analytics.export_jobs
WHERE status = 'pending' AND (available_at IS NULL OR available_at <= now())
  AND ((enqueued_at IS NULL AND updated_at < now() - make_interval(secs => $1))
       OR enqueued_at < now() - make_interval(secs => $2))
ORDER BY initiated_at
LIMIT $3;

-- name: mark_enqueued
-- Note that a message for the pending job was published. Committed without waiting for the WAL
-- flush (synchronous_commit off for this one statement's implicit transaction): losing the note
-- in a crash only makes the sweep publish the job again, which a duplicate-safe worker ignores,
-- and it spares every POST a second fsync.
UPDATE analytics.export_jobs SET enqueued_at = now()
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_flush_wait
WHERE job_id = $1 AND status = 'pending';

-- name: forget_idempotency_keys
-- Delete at most $1 idempotency keys past their 24 hours (a later use of the key creates a new
-- job anyway), oldest first, on export_idempotency_created_idx.
DELETE FROM analytics.export_idempotency
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM analytics.export_idempotency
    WHERE created_at <= now() - interval '24 hours'
    ORDER BY created_at
    LIMIT $1
));

-- name: job_backlog
-- Pending and running jobs of every org, how long the oldest pending job has been due (a job
-- waiting out a retry backoff is due from available_at), and enabled schedules whose next run is
-- over $1 seconds late (a tick should have made it), and webhook deliveries due that long ago
-- and not yet tried: the /metrics backlog gauges.
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'running') AS running,
       coalesce(extract(epoch FROM now() - min(coalesce(available_at, initiated_at))
                FILTER (WHERE status = 'pending' AND coalesce(available_at, initiated_at) <= now())), 0)::float8
           AS oldest_pending_seconds,
       (SELECT count(*) FROM analytics.export_schedules
        WHERE enabled AND next_run_at < now() - make_interval(secs => $1)) AS overdue_schedules,
       (SELECT count(*) FROM analytics.webhook_deliveries
        WHERE status = 'pending' AND due_at < now() - make_interval(secs => $1))
           AS overdue_webhook_deliveries
FROM analytics.export_jobs
WHERE status IN ('pending', 'running');

-- name: ping
-- Readiness probe.
SELECT 1;

-- name: migrations_lock
-- Serialise migration runs across processes (session-level advisory lock).
SELECT pg_advisory_lock(727372021);

-- name: migrations_unlock
-- Release the migration lock.
SELECT pg_advisory_unlock(727372021);

-- name: migrations_create_table
-- The record of applied migrations (in public: it outlives the analytics schema on a full down).
CREATE TABLE IF NOT EXISTS public.analytics_exports_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_applied
-- Applied migrations, in order.
SELECT version, name FROM public.analytics_exports_migrations ORDER BY version;

-- name: migrations_record
-- Note a migration as applied.
INSERT INTO public.analytics_exports_migrations (version, name) VALUES ($1, $2);

-- name: migrations_forget
-- Note a migration as rolled back.
DELETE FROM public.analytics_exports_migrations WHERE version = $1;

-- name: database_exists
-- Whether a database of that name exists.
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1);

-- name: quote_ident
-- Quote an identifier for the statements that take no parameters.
SELECT quote_ident($1);

-- name: count_schedules
-- How many schedules the org has.
SELECT count(*) FROM analytics.export_schedules WHERE org_id = $1;

-- name: create_schedule
-- Insert a new schedule and return it.
INSERT INTO analytics.export_schedules
    (schedule_id, org_id, created_by, cadence, period, time_zone, run_at_hour, granularity, models,
     output_format, output_schema, enabled, next_run_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
RETURNING *;

-- name: get_schedule
-- One schedule of one org (another org's is simply not found).
SELECT * FROM analytics.export_schedules WHERE org_id = $1 AND schedule_id = $2;

-- name: list_schedules
-- An org's schedules, oldest first.
SELECT * FROM analytics.export_schedules WHERE org_id = $1 ORDER BY created_at, schedule_id LIMIT $2;

-- name: update_schedule
-- Replace what a schedule does and when it next runs, if nothing changed it since it was read
-- at $13 (a tick that made runs meanwhile, another update).
UPDATE analytics.export_schedules
SET cadence = $3, period = $4, time_zone = $5, run_at_hour = $6, granularity = $7, models = $8,
    output_format = $9, output_schema = $10, enabled = $11, next_run_at = $12, updated_at = clock_timestamp()
WHERE org_id = $1 AND schedule_id = $2 AND updated_at = $13
RETURNING *;

-- name: delete_schedule
-- Delete a schedule (its jobs stay, with its id).
DELETE FROM analytics.export_schedules WHERE org_id = $1 AND schedule_id = $2 RETURNING schedule_id;

-- name: due_schedules
-- Enabled schedules whose next run is due at $1, the most overdue first, skipping the ids in $3
-- (those this tick already tried).
SELECT * FROM analytics.export_schedules
WHERE enabled AND next_run_at <= $1 AND NOT (schedule_id = ANY($3::uuid[]))
ORDER BY next_run_at, schedule_id
LIMIT $2;

-- name: advance_schedule
-- Compare-and-set the next run from $2 to $3 on the schedule as read at $5 (no update since):
-- whoever moves it makes the runs in between, with the settings they read.
UPDATE analytics.export_schedules
SET next_run_at = $3, last_run_at = $4, updated_at = clock_timestamp()
WHERE schedule_id = $1 AND next_run_at = $2 AND updated_at = $5 AND enabled
RETURNING schedule_id;

-- name: record_schedule_job
-- The newest job a schedule made.
UPDATE analytics.export_schedules SET last_job_id = $2 WHERE schedule_id = $1;

-- name: create_scheduled_job
-- Insert a schedule's job for one period, unless that schedule already has one for it.
INSERT INTO analytics.export_jobs
    (job_id, org_id, requested_by, time_range_start, time_range_end, granularity, models, request_id,
     time_zone, output_format, output_schema, schedule_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (schedule_id, time_range_start, time_range_end)
    WHERE schedule_id IS NOT NULL AND restatement_of IS NULL DO NOTHING
RETURNING *;

-- name: count_webhooks
-- How many webhook endpoints the org has.
SELECT count(*) FROM analytics.webhook_endpoints WHERE org_id = $1;

-- name: create_webhook
-- Insert a new endpoint and return it.
INSERT INTO analytics.webhook_endpoints (webhook_id, org_id, created_by, url, events, secret)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: get_webhook
-- One endpoint of one org (another org's is simply not found).
SELECT * FROM analytics.webhook_endpoints WHERE org_id = $1 AND webhook_id = $2;

-- name: list_webhooks
-- An org's endpoints, oldest first.
SELECT * FROM analytics.webhook_endpoints WHERE org_id = $1 ORDER BY created_at, webhook_id LIMIT $2;

-- name: update_webhook
-- Change an endpoint's URL ($3), events ($4) or enabled flag ($5); NULL keeps a value. Enabled
-- again, it starts afresh (not failing); disabled by its owner, it says so.
UPDATE analytics.webhook_endpoints
SET url = coalesce($3, url),
    events = coalesce($4, events),
    enabled = coalesce($5, enabled),
    disabled_reason = CASE WHEN $5 IS NULL OR $5 = enabled THEN disabled_reason
                           WHEN $5 THEN NULL ELSE 'disabled through the API' END,
    disabled_at = CASE WHEN $5 IS NULL OR $5 = enabled THEN disabled_at
                       WHEN $5 THEN NULL ELSE clock_timestamp() END,
    failing_since = CASE WHEN $5 AND NOT enabled THEN NULL ELSE failing_since END,
    updated_at = clock_timestamp()
WHERE org_id = $1 AND webhook_id = $2
RETURNING *;

-- name: fail_pending_deliveries
-- A disabled endpoint's deliveries that wait for an attempt are failed (none will be made).
UPDATE analytics.webhook_deliveries
SET status = 'failed', next_attempt_at = NULL, finished_at = clock_timestamp()
WHERE webhook_id = $1 AND status = 'pending';

-- name: delete_webhook
-- Delete an endpoint, its deliveries and their attempts.
DELETE FROM analytics.webhook_endpoints WHERE org_id = $1 AND webhook_id = $2 RETURNING webhook_id;

-- name: rotate_webhook_secret
-- A new secret ($3); the one it replaces still signs for $4 seconds.
UPDATE analytics.webhook_endpoints
SET previous_secret = secret,
    previous_secret_expires_at = clock_timestamp() + make_interval(secs => $4),
    secret = $3,
    updated_at = clock_timestamp()
WHERE org_id = $1 AND webhook_id = $2
RETURNING *;

-- name: list_deliveries
-- An endpoint's deliveries, newest first, before the cursor's seq $3 (NULL: from the newest),
-- each with its attempts, oldest first.
SELECT d.delivery_id, d.seq, d.webhook_id, d.org_id, d.event, d.job_id, d.status, d.next_attempt_at,
       d.created_at, d.finished_at,
       coalesce((SELECT jsonb_agg(to_jsonb(a) - 'delivery_id' ORDER BY a.attempt)
                 FROM analytics.webhook_attempts a WHERE a.delivery_id = d.delivery_id), '[]') AS attempts
FROM analytics.webhook_deliveries d
WHERE d.webhook_id = $1 AND d.org_id = $2 AND ($3::bigint IS NULL OR d.seq < $3)
ORDER BY d.seq DESC
LIMIT $4;

-- name: claim_due_deliveries
-- Deliveries due for an attempt, the most overdue first; each is held for $2 seconds (its next
-- attempt moved ahead) while a message carries it to a worker, so a tick at once takes others.
-- Returned with the attempts made so far: the message names the attempt it may make.
UPDATE analytics.webhook_deliveries d
SET next_attempt_at = clock_timestamp() + make_interval(secs => $2)
FROM (SELECT delivery_id FROM analytics.webhook_deliveries
      WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()
      ORDER BY next_attempt_at
      LIMIT $1
      FOR UPDATE SKIP LOCKED) due
WHERE d.delivery_id = due.delivery_id
RETURNING d.delivery_id, d.attempts;

-- name: begin_attempt
-- Start attempt $2 + 1 of a pending delivery to an enabled endpoint, if no other attempt started
-- since the message was sent (compare-and-set on attempts); the delivery is held for $3 seconds.
-- Returns what the attempt needs: the endpoint's URL and live secrets, the body if made.
UPDATE analytics.webhook_deliveries d
SET attempts = d.attempts + 1,
    next_attempt_at = clock_timestamp() + make_interval(secs => $3)
FROM analytics.webhook_endpoints e
WHERE d.delivery_id = $1 AND d.status = 'pending' AND d.attempts = $2
  AND e.webhook_id = d.webhook_id AND e.enabled
RETURNING d.delivery_id, d.webhook_id, d.org_id, d.event, d.job_id, d.attempts, d.payload, d.details,
          d.created_at, e.url, e.secret,
          CASE WHEN e.previous_secret_expires_at > clock_timestamp() THEN e.previous_secret END
              AS previous_secret;

-- name: set_delivery_payload
-- The body of a delivery, written once: every later attempt sends the same bytes.
UPDATE analytics.webhook_deliveries SET payload = coalesce(payload, $2)
WHERE delivery_id = $1
RETURNING payload;

-- name: record_attempt
-- What one attempt got.
INSERT INTO analytics.webhook_attempts (delivery_id, attempt, attempted_at, status_code, error, duration_ms)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT DO NOTHING;

-- name: mark_delivered
-- The receiver took it (whichever attempt did); the endpoint is not failing.
WITH delivered AS (
    UPDATE analytics.webhook_deliveries
    SET status = 'delivered', next_attempt_at = NULL, finished_at = clock_timestamp()
    WHERE delivery_id = $1 AND status = 'pending'
    RETURNING webhook_id
)
UPDATE analytics.webhook_endpoints SET failing_since = NULL
WHERE webhook_id = (SELECT webhook_id FROM analytics.webhook_deliveries WHERE delivery_id = $1);

-- name: mark_attempt_failed
-- Attempt $2 failed: the next one at $3, or none ($3 NULL: the delivery failed), unless another
-- attempt started meanwhile. The endpoint is failing since its first failure after a delivery.
WITH failed AS (
    UPDATE analytics.webhook_deliveries
    SET next_attempt_at = $3,
        due_at = coalesce($3, due_at),
        status = CASE WHEN $3::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
        finished_at = CASE WHEN $3::timestamptz IS NULL THEN clock_timestamp() END
    WHERE delivery_id = $1 AND status = 'pending' AND attempts = $2
    RETURNING webhook_id
)
UPDATE analytics.webhook_endpoints SET failing_since = coalesce(failing_since, $4)
WHERE webhook_id = (SELECT webhook_id FROM analytics.webhook_deliveries WHERE delivery_id = $1)
RETURNING failing_since;

-- name: delivery_webhook
-- The endpoint a delivery goes to.
SELECT webhook_id FROM analytics.webhook_deliveries WHERE delivery_id = $1;

-- name: disable_failing_webhook
-- Disable an endpoint that has failed every attempt since $2 or before.
UPDATE analytics.webhook_endpoints
SET enabled = false, disabled_at = clock_timestamp(), disabled_reason = $3, updated_at = clock_timestamp()
WHERE webhook_id = $1 AND enabled AND failing_since <= $2
RETURNING webhook_id;

-- name: forget_webhook_deliveries
-- Finished deliveries older than $1 (their attempts with them), at most $2 of them.
DELETE FROM analytics.webhook_deliveries
WHERE delivery_id IN (SELECT delivery_id FROM analytics.webhook_deliveries
                      WHERE status <> 'pending' AND finished_at < $1
                      LIMIT $2);

-- name: claim_totals_checks
-- Delivered exports (succeeded or expired, completed since $1) of enabled schedules, not yet
-- restated nor extended by a newer export of their schedule (month to date: only the latest
-- counts), whose totals were last compared before $2 (or never), the least recently checked
-- first, at most $3; each is marked checked now, so ticks at once take different ones. With its
-- manifest.
UPDATE analytics.export_jobs j SET totals_checked_at = clock_timestamp()
FROM (SELECT c.job_id FROM analytics.export_jobs c
      JOIN analytics.export_schedules s ON s.schedule_id = c.schedule_id AND s.enabled
      WHERE c.status IN ('succeeded', 'expired')
        AND c.completed_at >= $1
        AND (c.totals_checked_at IS NULL OR c.totals_checked_at < $2)
        AND NOT EXISTS (SELECT 1 FROM analytics.export_jobs r WHERE r.restatement_of = c.job_id)
        AND NOT EXISTS (SELECT 1 FROM analytics.export_jobs n
                        WHERE n.schedule_id = c.schedule_id AND n.restatement_of IS NULL
                          AND n.time_range_start = c.time_range_start
                          AND n.time_range_end > c.time_range_end)
      ORDER BY c.totals_checked_at NULLS FIRST
      LIMIT $3
      FOR UPDATE OF c SKIP LOCKED) AS due
WHERE j.job_id = due.job_id
RETURNING j.*, (SELECT m.manifest FROM analytics.export_manifests m WHERE m.job_id = j.job_id) AS manifest_text;

-- name: custom_plans
-- Plan the rest of this transaction's statements for their parameters (a cached generic plan of
-- an aggregate over a period can sort where one for the real range hashes, or scan every hour).
SET LOCAL plan_cache_mode = force_custom_plan;

-- name: create_restatement
-- A new job of the same schedule and period that restates job $13, unless it has one already.
INSERT INTO analytics.export_jobs
    (job_id, org_id, requested_by, time_range_start, time_range_end, granularity, models, request_id,
     time_zone, output_format, output_schema, schedule_id, restatement_of)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (restatement_of) WHERE restatement_of IS NOT NULL DO NOTHING
RETURNING *;

-- name: rollup_table_facts
-- What an export (and pruning) needs of rollup table $1 (schema-qualified): whether it exists,
-- whether it is a view (no index of its own) and whether rows can be deleted from it (a table,
-- plain or partitioned); its columns and their types (a domain's as its base type); the columns
-- this session's user may not SELECT, whether it may DELETE; and whether a valid, whole btree
-- index leads with (org_id, bucket_start).
SELECT to_regclass($1) IS NOT NULL AS present,
       coalesce((SELECT relkind = 'v' FROM pg_class WHERE oid = to_regclass($1)), false) AS view,
       coalesce((SELECT relkind IN ('r', 'p') FROM pg_class WHERE oid = to_regclass($1)), false) AS prunable,
       coalesce(has_table_privilege(to_regclass($1), 'DELETE'), false) AS deletable,
       coalesce((SELECT jsonb_object_agg(a.attname,
                                         CASE WHEN t.typtype = 'd'
                                              THEN format_type(t.typbasetype, t.typtypmod)
                                              ELSE format_type(a.atttypid, a.atttypmod) END)
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped), '{}')
           AS columns,
       coalesce((SELECT jsonb_agg(a.attname ORDER BY a.attnum)
                 FROM pg_attribute a
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                   AND NOT has_column_privilege(a.attrelid, a.attnum, 'SELECT')), '[]')
           AS unreadable,
       EXISTS (SELECT 1 FROM pg_index i
               JOIN pg_class ic ON ic.oid = i.indexrelid
               JOIN pg_am am ON am.oid = ic.relam
               WHERE i.indrelid = to_regclass($1) AND i.indisvalid AND i.indnkeyatts >= 2
                 AND i.indpred IS NULL AND am.amname = 'btree'
                 AND (SELECT attname FROM pg_attribute
                      WHERE attrelid = i.indrelid AND attnum = i.indkey[0]) = 'org_id'
                 AND (SELECT attname FROM pg_attribute
                      WHERE attrelid = i.indrelid AND attnum = i.indkey[1]) = 'bucket_start')
           AS ordered;
