-- Core tables: images, ingestion batches, GRPO groups, samples, quarantine.
CREATE TABLE images (
    sha256          TEXT PRIMARY KEY,      -- sha256 of the stored bytes
    original_sha256 TEXT NOT NULL,         -- sha256 of the bytes as received (re-ingest fast path)
    uri             TEXT NOT NULL,         -- relative to the workspace home, or a URI
    width           INTEGER NOT NULL,
    height          INTEGER NOT NULL,
    format          TEXT NOT NULL,         -- PNG, JPEG, ...
    original_mode   TEXT NOT NULL,         -- PIL mode as received (RGB, RGBA, L, I;16, CMYK, ...)
    n_bytes         BIGINT NOT NULL,
    note            TEXT,                  -- e.g. 'converted RGBA -> RGB'
    created_at      TIMESTAMP DEFAULT current_timestamp
);
CREATE INDEX images_original ON images(original_sha256);

CREATE TABLE batches (
    batch_id      TEXT PRIMARY KEY,
    source_uri    TEXT NOT NULL,           -- manifest path or dataset path, as given
    source_kind   TEXT NOT NULL,           -- 'jsonl' | 'parquet' | 'capture'
    n_rows        INTEGER NOT NULL DEFAULT 0,
    n_ingested    INTEGER NOT NULL DEFAULT 0,
    n_duplicates  INTEGER NOT NULL DEFAULT 0,
    n_quarantined INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMP DEFAULT current_timestamp
);

-- A GRPO group: rollouts that share a source image and an instruction.
CREATE TABLE groups (
    group_id       TEXT PRIMARY KEY,
    source_sha256  TEXT NOT NULL,
    instruction    TEXT NOT NULL,
    created_at     TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE samples (
    sample_id      TEXT PRIMARY KEY,
    batch_id       TEXT NOT NULL,
    group_id       TEXT NOT NULL,
    source_sha256  TEXT NOT NULL,
    edited_sha256  TEXT NOT NULL,
    instruction    TEXT NOT NULL,
    editor         TEXT,
    category       TEXT,
    metadata       TEXT,                   -- JSON text
    note           TEXT,                   -- conversion notes
    created_at     TIMESTAMP DEFAULT current_timestamp
);
CREATE INDEX samples_group ON samples(group_id);
CREATE INDEX samples_batch ON samples(batch_id);

CREATE SEQUENCE quarantine_seq;
CREATE TABLE quarantine (
    quarantine_id  BIGINT PRIMARY KEY DEFAULT nextval('quarantine_seq'),
    batch_id       TEXT NOT NULL,
    row_number     INTEGER,                -- 1-based line / row in the input
    row_text       TEXT,                   -- the row as received (JSON), truncated to 10 kB
    reason         TEXT NOT NULL,
    created_at     TIMESTAMP DEFAULT current_timestamp
);
