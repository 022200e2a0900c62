-- The event log partitioned by month of occurred_at (UTC), so retention drops whole months instead of
-- deleting rows (docs/adr/0016-event-log-partitions.md). A partitioned table's unique key must
-- hold the partition key, so the de-duplication key becomes (event_id, occurred_at): a copy of an event is
-- recognised while its month is attached. Months older than event_log_floor.floor are gone (archived): events
-- for them are dead-lettered `too_old`. Converting copies every stored row once (the one time it costs history).
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER INDEX events_pkey RENAME TO events_unpartitioned_pkey;
ALTER INDEX events_position RENAME TO events_unpartitioned_position;
ALTER INDEX IF EXISTS events_occurred_at RENAME TO events_unpartitioned_occurred_at;

-- The columns of 0001's events table again on purpose: this creates the partitioned table beside the old one.
CREATE TABLE events (
    event_id        uuid        NOT NULL,
    match_id        text        NOT NULL,
    player_id       text        NOT NULL,
    game            text        NOT NULL,
    mode            text,
    region          text,
    points          integer     NOT NULL CHECK (points > 0),
    occurred_at     timestamptz NOT NULL,
    display_name    text,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    ingested_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
-- Rebuild tails, verify and checkpoints read by Kafka position; closes read by occurred_at.
CREATE INDEX events_position ON events (kafka_partition, kafka_offset);
CREATE INDEX events_occurred_at ON events (occurred_at);

-- The oldest instant the log still holds (a month boundary). Only `leaderboard archive` moves it, under an
-- EXCLUSIVE lock that batches (ROW SHARE) wait for, so a batch never writes into a month being dropped.
CREATE TABLE event_log_floor (
    only_row boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    floor    timestamptz NOT NULL
);
INSERT INTO event_log_floor (floor) VALUES ('2020-01-01T00:00:00Z');  -- schemas.model.EARLIEST

-- The partition for the UTC month holding `at` (created if absent; none below the floor). True if created.
CREATE FUNCTION ensure_event_partition(at timestamptz) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    month timestamp := date_trunc('month', at AT TIME ZONE 'UTC');  -- UTC wall time, whatever the session's
    lo timestamptz := month AT TIME ZONE 'UTC';
    hi timestamptz := (month + interval '1 month') AT TIME ZONE 'UTC';
    name text := 'events_' || to_char(month, 'YYYY_MM');
BEGIN
    IF lo < (SELECT floor FROM event_log_floor)
       OR to_regclass(format('%I.%I', current_schema(), name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                   name, lo, hi);
    RETURN true;
END $$;

-- Every month the stored rows touch, and this month and the next (the hot path creates others on demand).
SELECT ensure_event_partition(m AT TIME ZONE 'UTC')
FROM generate_series(
    date_trunc('month', least((SELECT min(occurred_at) FROM events_unpartitioned), now()) AT TIME ZONE 'UTC'),
    greatest((SELECT max(occurred_at) FROM events_unpartitioned), now() + interval '1 month') AT TIME ZONE 'UTC',
    interval '1 month'
) AS m;
INSERT INTO events SELECT * FROM events_unpartitioned;
DROP TABLE events_unpartitioned;
