-- Moderation phase B (docs/adr/0013-moderation.md, addendum): the board paths record which moderation
-- action they reflect, and an erasure leaves the erased id for the consumers to drop from Redis.

-- The last moderation action (moderation_actions.seq) a board's checkpoint reflects: the players of later
-- void/unvoid/erase actions are refolded from their own events (events_player) by the next advance.
ALTER TABLE checkpoint_boards ADD COLUMN moderation_seq bigint NOT NULL DEFAULT 0;

-- The last action the Redis boards reflect, kept by the consumers (one row; verify waits for it).
CREATE TABLE moderation_applied (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      bigint  NOT NULL
);
INSERT INTO moderation_applied (seq) VALUES (0);

-- An erased id Redis may still hold (sorted-set members, the names hash). Written by the erasure's
-- transaction, deleted by the consumer that removed the id from Redis: like the outbox row, it is the one
-- place the id stays a little longer, and only until a consumer runs.
CREATE TABLE moderation_redis_erase (
    action_id uuid PRIMARY KEY REFERENCES moderation_actions (action_id),
    player_id text NOT NULL
);
