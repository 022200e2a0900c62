-- Months of the event log split into days (sub-partitions), so that the B-trees whose keys arrive in random
-- order (events_player, events_match) are only as large as a day's events where rows are written: inserts
-- into a month holding 10M events ran at 0.66x the rows per CPU-s of an empty month (docs/benchmarks.md,
-- 2026-12-03), and a month's cost grew with its history. The month stays the unit of retention and archive
-- (`leaderboard archive` detaches, copies and drops a month with its days; a restored month comes back as
-- one table). Months that already hold rows stay whole; empty ones are split now, later ones when made.

-- 0005's function again with the days added (deliberate repetition: applied migrations are never edited, so
-- the new body is stated whole here and replaces the old one).
CREATE OR REPLACE FUNCTION ensure_event_partition(at timestamptz) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    month timestamp := date_trunc('month', at AT TIME ZONE 'UTC');  -- UTC wall time, whatever the session's
    lo timestamptz := month AT TIME ZONE 'UTC';
    hi timestamptz := (month + interval '1 month') AT TIME ZONE 'UTC';
    name text := 'events_' || to_char(month, 'YYYY_MM');
    day timestamp;
BEGIN
    IF lo < (SELECT floor FROM event_log_floor)
       OR to_regclass(format('%I.%I', current_schema(), name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L) PARTITION BY RANGE (occurred_at)',
                   name, lo, hi);
    FOR day IN SELECT generate_series(month, month + interval '1 month' - interval '1 day', interval '1 day') LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       'events_' || to_char(day, 'YYYY_MM_DD'), name,
                       day AT TIME ZONE 'UTC', (day + interval '1 day') AT TIME ZONE 'UTC');
    END LOOP;
    RETURN true;
END $$;

DO $$
DECLARE
    part record;
    empty boolean;
BEGIN
    -- Batches of older consumers may be writing: they lock events, then a month. Taking events first (as
    -- dropping a partition must) keeps that order, and no row can enter a month between the check and the
    -- drop. Only DDL runs under it.
    LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
    FOR part IN
        SELECT c.relname, to_date(substr(c.relname, 8), 'YYYY_MM')::timestamp AS month  -- UTC wall time
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass AND c.relkind = 'r' AND c.relname ~ '^events_[0-9]{4}_[0-9]{2}$'
    LOOP
        EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I)', part.relname) INTO empty;
        IF empty THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            IF NOT ensure_event_partition(part.month AT TIME ZONE 'UTC') THEN  -- below the floor: never attached
                RAISE EXCEPTION 'migration 0018: could not split %', part.relname;
            END IF;
        END IF;
    END LOOP;
END $$;
