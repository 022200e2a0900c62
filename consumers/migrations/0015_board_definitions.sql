-- Boards managed at runtime (issue 16, docs/adr/0019-runtime-boards.md). Every applied definition is kept,
-- numbered per board (a changed definition is a new version, never an update); `board_states` says which
-- version is live, which is a draft and in which Redis generation the draft was built; `board_catalog.version`
-- rises with every change, so running processes notice one with one primary-key read.
CREATE TABLE board_definitions (
    board      text        NOT NULL,
    version    integer     NOT NULL CHECK (version >= 1),
    definition jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (board, version)
);

CREATE TABLE board_states (
    board            text        PRIMARY KEY,
    state            text        NOT NULL CHECK (state IN ('draft', 'active', 'retired')),
    live_version     integer,
    draft_version    integer,
    draft_generation integer,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (board, live_version) REFERENCES board_definitions (board, version),
    FOREIGN KEY (board, draft_version) REFERENCES board_definitions (board, version),
    CHECK (state <> 'draft' OR live_version IS NULL),
    CHECK (state <> 'active' OR live_version IS NOT NULL),
    CHECK (draft_generation IS NULL OR draft_version IS NOT NULL)
);

CREATE TABLE board_catalog (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    version bigint  NOT NULL
);
INSERT INTO board_catalog (id, version) VALUES (true, 0);
