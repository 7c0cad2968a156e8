-- Every event immutable again, as migration 0004 made it (counts already written stay).
CREATE OR REPLACE FUNCTION analytics.export_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'analytics.export_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
