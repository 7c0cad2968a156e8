-- Idempotency-Key on POST /exports (issue 4): the same key and body within 24 h returns the same
-- job; the same key with a different body is refused. Keys are per org.
CREATE TABLE analytics.export_idempotency (
    org_id       uuid        NOT NULL,
    key          text        NOT NULL,
    -- SHA-256 of the normalised request (not the raw bytes: whitespace and field order do not count).
    request_hash text        NOT NULL,
    job_id       uuid        NOT NULL REFERENCES analytics.export_jobs (job_id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, key)
);
CREATE INDEX export_idempotency_created_idx ON analytics.export_idempotency (created_at);
