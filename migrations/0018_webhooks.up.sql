-- Webhooks (issue 16). An org registers endpoints; each event of its jobs becomes one delivery per
-- enabled endpoint that subscribed to it, made by a trigger in the transaction that finished the
-- job (an outbox: no event lost, none made twice). Deliveries are tried until the receiver says
-- 2xx or the retry schedule runs out; each attempt is kept, with the receiver's status code.
CREATE TABLE analytics.webhook_endpoints (
    webhook_id                 uuid        PRIMARY KEY,
    org_id                     uuid        NOT NULL,
    created_by                 text        NOT NULL,
    url                        text        NOT NULL,
    events                     text[]      NOT NULL
        CONSTRAINT webhook_endpoints_events
        CHECK (cardinality(events) > 0
               AND events <@ ARRAY['export.succeeded', 'export.failed', 'export.restated']),
    -- whsec_ + base64 of 32 random bytes: HMAC is symmetric, so the sender keeps the key.
    secret                     text        NOT NULL,
    -- The secret a rotation replaced signs too, until previous_secret_expires_at.
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    enabled                    boolean     NOT NULL DEFAULT true,
    disabled_reason            text,
    disabled_at                timestamptz,
    -- The first failed attempt since the last delivered one; a day of that disables the endpoint.
    failing_since              timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_org_idx ON analytics.webhook_endpoints (org_id, created_at, webhook_id);

CREATE TABLE analytics.webhook_deliveries (
    delivery_id     uuid        PRIMARY KEY,
    -- The order deliveries were made in: the list's cursor.
    seq             bigserial   NOT NULL UNIQUE,
    webhook_id      uuid        NOT NULL REFERENCES analytics.webhook_endpoints ON DELETE CASCADE,
    org_id          uuid        NOT NULL,
    event           text        NOT NULL
        CONSTRAINT webhook_deliveries_event
        CHECK (event IN ('export.succeeded', 'export.failed', 'export.restated')),
    job_id          uuid        NOT NULL,
    -- What the event adds to the job (a restatement's totals before and after).
    details         jsonb       NOT NULL DEFAULT '{}',
    -- The body, written at the first attempt and sent unchanged on every retry.
    payload         bytea,
    status          text        NOT NULL DEFAULT 'pending'
        CONSTRAINT webhook_deliveries_status CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- When the next attempt is due (NULL once finished); a dispatch moves it ahead as its claim.
    next_attempt_at timestamptz,
    -- When the attempt under way became due (claims leave it): how late deliveries are.
    due_at          timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT webhook_deliveries_due CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CONSTRAINT webhook_deliveries_once UNIQUE (webhook_id, job_id, event)
);
CREATE INDEX webhook_deliveries_due_idx ON analytics.webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_list_idx ON analytics.webhook_deliveries (webhook_id, seq DESC);
CREATE INDEX webhook_deliveries_finished_idx ON analytics.webhook_deliveries (finished_at)
    WHERE status <> 'pending';

CREATE TABLE analytics.webhook_attempts (
    delivery_id  uuid        NOT NULL REFERENCES analytics.webhook_deliveries ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    attempted_at timestamptz NOT NULL,
    status_code  integer,
    error        text,
    duration_ms  integer     NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- One delivery of event to every enabled endpoint of org that subscribed to it.
CREATE FUNCTION analytics.enqueue_webhook_deliveries(org uuid, job uuid, kind text, extra jsonb)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO analytics.webhook_deliveries
        (delivery_id, webhook_id, org_id, event, job_id, details, next_attempt_at)
    SELECT gen_random_uuid(), webhook_id, org, kind, job, extra, now()
      FROM analytics.webhook_endpoints
     WHERE org_id = org AND enabled AND kind = ANY (events)
    ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO NOTHING
$$;

CREATE FUNCTION analytics.job_finished_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM analytics.enqueue_webhook_deliveries(
        NEW.org_id, NEW.job_id, 'export.' || NEW.status::text, '{}'::jsonb);
    RETURN NULL;
END $$;

CREATE TRIGGER export_jobs_webhooks
    AFTER UPDATE OF status ON analytics.export_jobs
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status AND NEW.status::text IN ('succeeded', 'failed'))
    EXECUTE FUNCTION analytics.job_finished_webhooks();
