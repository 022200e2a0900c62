-- events_pkey (event_id, occurred_at) was one of the random-order B-trees every insert pays for (a random
-- leaf page per row), and nothing needs it since event_ids (0014) is the de-duplication key: a row is only
-- inserted for the claim it makes there. Lookups of stored events by id go through event_ids' position and
-- events_position (leaderboard.moderation.store). The log keeps no unique key: a recreated topic restarts
-- its offsets, so positions are not unique over the log's life (docs/operations.md, checkpoints).
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_pkey;
