-- The Kafka position of the win a player's display name came from. The name is the one of the latest win by
-- occurred_at, ties broken by (partition, offset): with the position stored, a replay or a late copy at the
-- same instant decides exactly as the first pass did (consumers/pg_sink.py, _PLAYERS). Rows written before
-- this migration rank below any win at their instant.
-- name_changed: whether the last upsert of the row changed its name, computed against the row version the
-- upsert locked (RETURNING cannot see the old row before PostgreSQL 18): what the Redis names hash is told.
ALTER TABLE players
    ADD COLUMN name_partition integer NOT NULL DEFAULT -1,
    ADD COLUMN name_offset bigint NOT NULL DEFAULT -1,
    ADD COLUMN name_changed boolean NOT NULL DEFAULT true;
