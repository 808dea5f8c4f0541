-- Bring your own data: datasets ingested by column mapping, masks that come with the data, and
-- annotations imported from Label Studio exports.

-- How a batch's columns map to ours (JSON {"schema": preset or null, "columns": {field: column}}),
-- NULL for the platform's own format. `ingest_batch` reuses it on a rerun.
ALTER TABLE batches ADD COLUMN source_options TEXT;

-- An edit mask that came with the data (MagicBrush's mask image, a COCO RLE column): the
-- sample's `edit` region. The proposer uses it (regions.proposed_on = 'provided').
CREATE TABLE provided_masks (
    sample_id    TEXT PRIMARY KEY,
    batch_id     TEXT NOT NULL,
    origin       TEXT NOT NULL,             -- 'image' (white = edited) | 'coco_rle'
    column_name  TEXT NOT NULL,             -- the dataset column it was read from
    rle          TEXT NOT NULL,             -- COCO RLE JSON on the source image's grid
    x1 INTEGER NOT NULL, y1 INTEGER NOT NULL, x2 INTEGER NOT NULL, y2 INTEGER NOT NULL,
    area         BIGINT NOT NULL,           -- pixels
    created_at   TIMESTAMP DEFAULT current_timestamp
);

-- Where an annotation came from: 'sync' (a live Label Studio project) or 'imported' (a JSON
-- export, `sfr annotate import`), with the export file's sha256.
ALTER TABLE annotations ADD COLUMN source TEXT DEFAULT 'sync';
ALTER TABLE annotations ADD COLUMN import_sha256 TEXT;

-- One row per imported export file: importing the same file again changes nothing.
CREATE TABLE annotation_imports (
    sha256         TEXT PRIMARY KEY,
    project_key    TEXT NOT NULL,
    file_name      TEXT NOT NULL,
    n_tasks        INTEGER NOT NULL,
    n_annotations  INTEGER NOT NULL,
    n_imported     INTEGER NOT NULL,        -- new or changed annotations stored
    n_unchanged    INTEGER NOT NULL,        -- already in the warehouse as they are
    n_rejected     INTEGER NOT NULL,        -- reported, not stored
    rejected       TEXT NOT NULL,           -- JSON [{task, annotation, reason}]
    imported_at    TIMESTAMP DEFAULT current_timestamp
);
