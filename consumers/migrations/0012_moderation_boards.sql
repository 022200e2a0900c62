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

-- Closed periods and moderation (ADR 0013 addendum). A close leaves out the players held off the board at
-- that moment and records them (period_held), so a later correction computes the same standings again
-- with the facts (voids, erasures) that came since; holds that start or end after a close change nothing.
ALTER TABLE closed_periods
    ADD COLUMN moderation_seq bigint  NOT NULL DEFAULT 0,  -- last action the stored standings reflect
    ADD COLUMN version        integer NOT NULL DEFAULT 1,  -- 1 at close, +1 per correction
    ADD COLUMN corrected_at   timestamptz;
-- Periods closed before moderation reached the boards are not rewritten by the actions taken before.
UPDATE closed_periods SET moderation_seq = (SELECT coalesce(max(seq), 0) FROM moderation_actions);
CREATE TABLE period_held (
    board     text NOT NULL,
    period    text NOT NULL,
    player_id text NOT NULL,
    PRIMARY KEY (board, period, player_id)
);
CREATE INDEX period_held_player ON period_held (player_id);
-- Earlier versions of corrected standings (period_standings holds the latest).
CREATE TABLE period_standings_history (
    board      text        NOT NULL,
    period     text        NOT NULL,
    version    integer     NOT NULL,
    rank       integer     NOT NULL,
    position   integer     NOT NULL,
    player_id  text        NOT NULL,
    score      bigint      NOT NULL,
    reached_at timestamptz NOT NULL,
    PRIMARY KEY (board, period, version, position)
);
CREATE INDEX period_standings_history_player ON period_standings_history (player_id);
-- One correction per new version, published as period-corrected.v1 (published_at once acknowledged);
-- its moves are rows, not a JSON blob, so an erasure can rename the player in them.
CREATE TABLE period_corrections (
    board        text        NOT NULL,
    period       text        NOT NULL,
    version      integer     NOT NULL,
    action_seq   bigint      NOT NULL,
    corrected_at timestamptz NOT NULL,
    published_at timestamptz,
    PRIMARY KEY (board, period, version)
);
CREATE TABLE period_correction_moves (
    board     text    NOT NULL,
    period    text    NOT NULL,
    version   integer NOT NULL,
    player_id text    NOT NULL,
    old_rank  integer,
    new_rank  integer,
    old_score bigint,
    new_score bigint,
    PRIMARY KEY (board, period, version, player_id),
    FOREIGN KEY (board, period, version) REFERENCES period_corrections (board, period, version)
);
CREATE INDEX period_correction_moves_player ON period_correction_moves (player_id);
