-- Standings checkpoints (docs/adr: checkpoints): each board's folded standings per period and player, computed
-- from the event log, with the Kafka position per partition up to which every stored event is folded in.
-- A fold adds the events after those positions and moves them, in one transaction: each event is folded once.
CREATE TABLE checkpoint_boards (
    board       text PRIMARY KEY,
    fingerprint text        NOT NULL,  -- what decides the fold (filter, periods, timezone, aggregation)
    seen_until  timestamptz,           -- latest ingested_at folded: the group's recorded clock
    folded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE checkpoint_positions (
    board           text    NOT NULL REFERENCES checkpoint_boards (board) ON DELETE CASCADE,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint  NOT NULL,
    PRIMARY KEY (board, kafka_partition)
);
-- sum: points summed, at_s = latest win (epoch s); best: best points, at_s = earliest win with them.
-- The tie-break of the period follows from at_s (leaderboard.scoring), so no period origin is stored here.
CREATE TABLE standings_checkpoint (
    board     text   NOT NULL,
    period    text   NOT NULL,
    player_id text   NOT NULL,
    points    bigint NOT NULL,
    at_s      bigint NOT NULL,
    events    bigint NOT NULL,
    PRIMARY KEY (board, period, player_id)
) WITH (fillfactor = 80);  -- room on the page keeps a fold's updates heap-only (no new index entries)
-- A close freezes the period first (the row, so later events are dead-lettered), then stores the standings
-- outside any lock batches wait on and sets this. NULL: frozen, standings not stored yet.
ALTER TABLE closed_periods ADD COLUMN standings_at timestamptz;
UPDATE closed_periods SET standings_at = closed_at;
-- Tails are read by Kafka position (0001 has this index; kept here for logs recreated without it).
CREATE INDEX IF NOT EXISTS events_position ON events (kafka_partition, kafka_offset);
