-- Moderation (docs/adr/0013-moderation.md). The audit trail is append-only; the state tables below are
-- derived from it in the same transaction and are what the recompute paths read (cheap: keyed by player,
-- event, match or action). Erasure is the one rewrite: it swaps the player id for a pseudonym everywhere.

-- Every accepted action, once (action_id is the idempotency key). `record` is the action's wire form
-- (schemas/moderation.v1.json); after an erasure it names the pseudonym, never the erased id.
CREATE TABLE moderation_actions (
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    action_id   uuid        PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('exclude', 'reinstate', 'void', 'unvoid', 'erase')),
    player_id   text,
    target      uuid        UNIQUE REFERENCES moderation_actions (action_id),
    actor       text        NOT NULL,
    reason      text        NOT NULL,
    at          timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    record      jsonb       NOT NULL,
    CHECK ((kind = 'unvoid') = (target IS NOT NULL))
);
CREATE INDEX moderation_actions_player ON moderation_actions (player_id, seq) WHERE player_id IS NOT NULL;

-- Actions stored but not yet acknowledged by Kafka: the exact bytes to publish. A row goes once the
-- broker acks (publishing twice is harmless: readers de-duplicate by action_id).
CREATE TABLE moderation_outbox (
    action_id uuid  PRIMARY KEY REFERENCES moderation_actions (action_id),
    key       bytea NOT NULL,
    value     bytea NOT NULL
);

-- Active holds: (player, board); board '*' is every board, present and future.
CREATE TABLE moderation_exclusions (
    player_id text        NOT NULL,
    board     text        NOT NULL,
    action_id uuid        NOT NULL REFERENCES moderation_actions (action_id),
    since     timestamptz NOT NULL,
    PRIMARY KEY (player_id, board)
);

-- Active voids, one row per target and void action (two voids of one event: both must be unvoided).
CREATE TABLE moderation_void_events (
    event_id  uuid NOT NULL,
    action_id uuid NOT NULL REFERENCES moderation_actions (action_id),
    PRIMARY KEY (event_id, action_id)
);
CREATE TABLE moderation_void_matches (
    match_id  text NOT NULL,
    action_id uuid NOT NULL REFERENCES moderation_actions (action_id),
    PRIMARY KEY (match_id, action_id)
);
-- A player's events with occurred_at in [starts_at, ends_at). A player's active windows never overlap.
CREATE TABLE moderation_void_windows (
    action_id uuid        PRIMARY KEY REFERENCES moderation_actions (action_id),
    player_id text        NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at   timestamptz NOT NULL,
    CHECK (starts_at < ends_at)
);
CREATE INDEX moderation_void_windows_player ON moderation_void_windows (player_id, starts_at);

-- Erased players by pseudonym only: no column holds the erased id. `id_digest` (SHA-256 of the id) lets
-- records still inside Kafka's retention (the erasure horizon) be recognised and kept out; it is cleared
-- once `digest_until` (the horizon) has passed, after which nothing links the pseudonym to the person.
CREATE TABLE moderation_erasures (
    pseudonym    text        PRIMARY KEY,
    action_id    uuid        NOT NULL UNIQUE REFERENCES moderation_actions (action_id),
    erased_at    timestamptz NOT NULL,
    id_digest    bytea       UNIQUE,
    digest_until timestamptz NOT NULL
);

-- Moderation finds a player's or a match's events without scanning the log (void by window, erase, and
-- phase B's per-player recompute); closed standings are erased by player as well.
CREATE INDEX events_player ON events (player_id, occurred_at);
CREATE INDEX events_match ON events (match_id);
CREATE INDEX period_standings_player ON period_standings (player_id);
