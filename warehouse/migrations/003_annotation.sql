-- Human annotation in Label Studio.
CREATE TABLE ls_projects (
    project_key        TEXT PRIMARY KEY,    -- our name for it, e.g. 'sfreward-v1'
    ls_project_id      INTEGER NOT NULL,
    base_url           TEXT NOT NULL,
    label_config_hash  TEXT NOT NULL,
    region_config_hash TEXT,                -- which proposer config its prefills came from
    overlap            INTEGER NOT NULL DEFAULT 1,
    created_at         TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE tasks (
    task_key       TEXT PRIMARY KEY,        -- project_key + ':' + sample_id
    project_key    TEXT NOT NULL,
    sample_id      TEXT NOT NULL,
    region_set_id  TEXT,
    ls_task_id     INTEGER NOT NULL,
    is_gold        BOOLEAN NOT NULL DEFAULT false,
    priority       DOUBLE NOT NULL DEFAULT 0,
    pushed_at      TIMESTAMP DEFAULT current_timestamp
);
CREATE UNIQUE INDEX tasks_ls ON tasks(project_key, ls_task_id);

CREATE TABLE annotators (
    annotator_id   TEXT PRIMARY KEY,        -- 'ls:<user id>@<base_url host>'
    email          TEXT,
    is_simulated   BOOLEAN NOT NULL DEFAULT false,
    profile        TEXT,                    -- JSON (simulated annotators: noise settings)
    created_at     TIMESTAMP DEFAULT current_timestamp
);

-- Every version of every annotation seen by sync (history); never updated, never deleted.
CREATE TABLE annotation_versions (
    ls_annotation_id  BIGINT NOT NULL,
    project_key       TEXT NOT NULL,
    version           INTEGER NOT NULL,     -- 1, 2, ... per annotation
    task_key          TEXT NOT NULL,
    annotator_id      TEXT,
    updated_at        TIMESTAMP,            -- Label Studio's updated_at
    was_cancelled     BOOLEAN NOT NULL DEFAULT false,   -- skipped
    is_deleted        BOOLEAN NOT NULL DEFAULT false,
    lead_time         DOUBLE,
    result            TEXT,                 -- raw Label Studio result JSON
    synced_at         TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (project_key, ls_annotation_id, version)
);

-- The current state of each annotation (latest version), parsed.
CREATE TABLE annotations (
    ls_annotation_id  BIGINT NOT NULL,
    project_key       TEXT NOT NULL,
    task_key          TEXT NOT NULL,
    sample_id         TEXT NOT NULL,
    annotator_id      TEXT,
    version           INTEGER NOT NULL,
    updated_at        TIMESTAMP,
    was_cancelled     BOOLEAN NOT NULL DEFAULT false,
    is_deleted        BOOLEAN NOT NULL DEFAULT false,
    valid             BOOLEAN NOT NULL,
    invalid_reason    TEXT,
    overall           INTEGER,              -- 1..5 stars, NULL when missing
    naturalness       INTEGER,
    artifacts         INTEGER,              -- 5 = no artifacts
    PRIMARY KEY (project_key, ls_annotation_id)
);

-- Regions of the current version of each annotation, with their per-region ratings.
CREATE TABLE annotation_regions (
    project_key       TEXT NOT NULL,
    ls_annotation_id  BIGINT NOT NULL,
    region_key        TEXT NOT NULL,        -- Label Studio result id (= proposal region idx tag when prefilled)
    region_id         TEXT,                 -- proposal region it came from (NULL: drawn by the annotator)
    kind              TEXT,                 -- brush label -> region kind
    rle               TEXT,                 -- COCO RLE JSON of the (possibly edited) mask
    x1 INTEGER, y1 INTEGER, x2 INTEGER, y2 INTEGER,
    area              BIGINT,
    success           INTEGER,              -- 1..5 stars
    preserve          INTEGER,
    verdict           TEXT,                 -- correct_edit | artifact | unintended_change | missed_edit | fine
    valid             BOOLEAN NOT NULL,
    invalid_reason    TEXT,
    PRIMARY KEY (project_key, ls_annotation_id, region_key)
);

CREATE TABLE sync_state (
    project_key  TEXT PRIMARY KEY,
    cursor       TEXT NOT NULL,             -- JSON
    updated_at   TIMESTAMP DEFAULT current_timestamp
);
