-- The durable event log: every valid event exactly once (event_id), with the Kafka coordinates of the
-- record that first carried it. That record is the canonical one; any other copy is a duplicate.
CREATE TABLE events (
    event_id        uuid PRIMARY KEY,
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
    ingested_at     timestamptz NOT NULL DEFAULT now()
);
-- Rebuild tails and verify read by Kafka position.
CREATE INDEX events_position ON events (kafka_partition, kafka_offset);
CREATE INDEX events_occurred_at ON events (occurred_at);

CREATE TABLE players (
    player_id    text PRIMARY KEY,
    display_name text,
    updated_at   timestamptz NOT NULL
);

-- Periods closed for good: later events for them are dead-lettered with reason period_closed.
CREATE TABLE closed_periods (
    board     text        NOT NULL,
    period    text        NOT NULL,
    closed_at timestamptz NOT NULL DEFAULT now(),
    players   integer     NOT NULL,
    PRIMARY KEY (board, period)
);

-- Final standings of closed periods; the API serves them once Redis has let the period go.
CREATE TABLE period_standings (
    board      text        NOT NULL,
    period     text        NOT NULL,
    rank       integer     NOT NULL,
    position   integer     NOT NULL,
    player_id  text        NOT NULL,
    score      bigint      NOT NULL,
    reached_at timestamptz NOT NULL,
    PRIMARY KEY (board, period, position),
    UNIQUE (board, period, player_id),
    FOREIGN KEY (board, period) REFERENCES closed_periods (board, period)
);
