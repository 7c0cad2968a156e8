-- The id of the API request that created a job (X-Request-ID, or one the API made up), so the
-- worker's log lines for every attempt carry the same request_id as the API's lines for the
-- POST: one id follows an export from the call to the file. NULL for jobs created before.
ALTER TABLE analytics.export_jobs ADD COLUMN request_id text
    CONSTRAINT export_jobs_request_id_length CHECK (length(request_id) BETWEEN 1 AND 128);
