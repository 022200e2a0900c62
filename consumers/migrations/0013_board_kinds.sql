-- Board kinds (issue 16): boards may rank by an event's optional `score` and keep the `last` value.
-- events.score: the optional ranking value of match-won v1 (NULL when the event carries none).
ALTER TABLE events ADD COLUMN score integer CHECK (score >= 0);
-- A `last` board's checkpoint row remembers which event it shows: the latest by occurred_at (microseconds
-- since the epoch), ties by Kafka position, so folding a tail onto it decides as the live path does.
ALTER TABLE standings_checkpoint
    ADD COLUMN last_us bigint,
    ADD COLUMN last_partition integer,
    ADD COLUMN last_offset bigint;
