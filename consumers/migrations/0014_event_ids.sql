-- The de-duplication key is the event_id again (G1), whatever occurred_at a copy carries: the partitioned
-- events table can only be unique on (event_id, occurred_at), so one row per stored event here names the
-- copy that claimed each id (docs/adr/0016-event-log-partitions.md, addendum). Retention equals the log's:
-- `leaderboard archive` deletes a month's ids with the month, `--restore` puts them back.
CREATE TABLE event_ids (
    event_id        uuid    PRIMARY KEY,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint  NOT NULL
);
-- A log written before this may hold one id twice (different occurred_at): the earliest position claims it.
INSERT INTO event_ids
SELECT DISTINCT ON (event_id) event_id, kafka_partition, kafka_offset FROM events
ORDER BY event_id, kafka_partition, kafka_offset;
