-- Curation: gold answers, aggregated labels, agreement reports, stable split assignments,
-- dataset versions with their rows, regions and exclusions.

-- Known answers for gold tasks (tasks.is_gold). region_id = '' for image-level dimensions.
CREATE TABLE gold_answers (
    sample_id   TEXT NOT NULL,
    region_id   TEXT NOT NULL DEFAULT '',
    dimension   TEXT NOT NULL,              -- overall | naturalness | artifacts | success | preserve
    rating      INTEGER NOT NULL,           -- 1..5 stars, as annotators rate
    created_at  TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (sample_id, region_id, dimension)
);

-- Aggregated labels over the current annotations (refreshed by warehouse.curation.aggregate).
-- Ratings stay on the 1..5 scale here; exports map to 0..25 with score = 5 * rating.
CREATE TABLE agg_regions (
    sample_id        TEXT NOT NULL,
    region_id        TEXT NOT NULL,         -- proposal region id, or 'drawn:<project>:<annotation>:<key>'
    is_drawn         BOOLEAN NOT NULL,
    n_annotators     INTEGER NOT NULL,      -- annotators who submitted this region
    success_n        INTEGER NOT NULL,
    success_mean     DOUBLE, success_median DOUBLE, success_std DOUBLE,
    preserve_n       INTEGER NOT NULL,
    preserve_mean    DOUBLE, preserve_median DOUBLE, preserve_std DOUBLE,
    verdict          TEXT,                  -- most frequent verdict (ties: alphabetical)
    PRIMARY KEY (sample_id, region_id)
);

CREATE TABLE agg_samples (
    sample_id         TEXT PRIMARY KEY,
    n_annotations     INTEGER NOT NULL,     -- current, not deleted (incl. skipped / invalid)
    n_skipped         INTEGER NOT NULL,
    n_invalid         INTEGER NOT NULL,
    n_annotators      INTEGER NOT NULL,     -- valid, not skipped annotations (one per annotator)
    n_complete        INTEGER NOT NULL,     -- of those, with overall, naturalness and artifacts
    overall_mean DOUBLE, overall_median DOUBLE, overall_std DOUBLE,
    naturalness_mean DOUBLE, naturalness_median DOUBLE, naturalness_std DOUBLE,
    artifacts_mean DOUBLE, artifacts_median DOUBLE, artifacts_std DOUBLE
);

-- Perceptual hashes of stored images (cache; dHash 64-bit as a signed BIGINT).
CREATE TABLE image_hashes (
    sha256  TEXT PRIMARY KEY,
    dhash   BIGINT NOT NULL
);

-- Agreement reports: one row per computed figure, keyed by report id.
CREATE TABLE agreement_reports (
    report_id    TEXT NOT NULL,
    scope        TEXT NOT NULL,             -- 'all' | 'project' | 'batch'
    scope_key    TEXT NOT NULL,             -- '' for 'all'
    dimension    TEXT NOT NULL,
    alpha        DOUBLE,                    -- Krippendorff's alpha, ordinal; NULL when undefined
    n_units      INTEGER NOT NULL,          -- units with >= 2 ratings
    n_ratings    INTEGER NOT NULL,
    created_at   TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE annotator_quality (
    report_id       TEXT NOT NULL,
    annotator_id    TEXT NOT NULL,
    n_ratings       INTEGER NOT NULL,
    n_shared        INTEGER NOT NULL,       -- ratings on units someone else also rated
    mae_vs_others   DOUBLE,                 -- mean |rating - mean of the others|, stars
    within1_others  DOUBLE,                 -- share within 1 star of the others' mean
    n_gold          INTEGER NOT NULL,
    mae_vs_gold     DOUBLE,
    within1_gold    DOUBLE,
    flagged         BOOLEAN NOT NULL,
    flag_reason     TEXT,
    PRIMARY KEY (report_id, annotator_id)
);

-- Stable split assignments, keyed by the things that must never straddle splits: source and
-- edited image hashes and GRPO group ids. Once written, a key never changes split under the
-- same scheme (scheme = hash of seed and fractions).
CREATE TABLE split_assignments (
    scheme       TEXT NOT NULL,
    key_kind     TEXT NOT NULL,             -- 'image' | 'group'
    key          TEXT NOT NULL,
    split        TEXT NOT NULL,             -- train | validation | test
    assigned_at  TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (scheme, key_kind, key)
);

CREATE TABLE dataset_versions (
    dataset_id        TEXT PRIMARY KEY,     -- 'sfr-' + content hash of rows and config
    name              TEXT NOT NULL,
    config            TEXT NOT NULL,        -- JSON of the CurationConfig
    config_hash       TEXT NOT NULL,
    rows_hash         TEXT NOT NULL,
    n_rows            INTEGER NOT NULL,
    n_regions         BIGINT NOT NULL,
    split_counts      TEXT NOT NULL,        -- JSON {split: n}
    exclusion_counts  TEXT NOT NULL,        -- JSON {reason: n}
    agreement         TEXT NOT NULL,        -- JSON summary of the agreement report
    agreement_report_id TEXT,
    created_at        TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE dataset_rows (
    dataset_id     TEXT NOT NULL,
    sample_id      TEXT NOT NULL,
    group_id       TEXT NOT NULL,
    source_sha256  TEXT NOT NULL,
    edited_sha256  TEXT NOT NULL,
    split          TEXT NOT NULL,
    instruction    TEXT NOT NULL,
    category       TEXT,
    editor         TEXT,
    overall        DOUBLE,                  -- 0..25
    naturalness    DOUBLE,
    artifacts      DOUBLE,
    n_annotators   INTEGER NOT NULL,
    PRIMARY KEY (dataset_id, sample_id)
);

CREATE TABLE dataset_regions (
    dataset_id     TEXT NOT NULL,
    sample_id      TEXT NOT NULL,
    region_id      TEXT NOT NULL,
    ord            INTEGER NOT NULL,        -- order within the sample (background last)
    kind           TEXT NOT NULL,
    rle            TEXT NOT NULL,
    x1 INTEGER NOT NULL, y1 INTEGER NOT NULL, x2 INTEGER NOT NULL, y2 INTEGER NOT NULL,
    area           BIGINT NOT NULL,
    success        DOUBLE,                  -- 0..25, NULL when not rated
    preserve       DOUBLE,
    success_std    DOUBLE,
    preserve_std   DOUBLE,
    n_annotators   INTEGER NOT NULL,
    verdict        TEXT,
    PRIMARY KEY (dataset_id, sample_id, region_id)
);

CREATE TABLE dataset_exclusions (
    dataset_id   TEXT NOT NULL,
    item_kind    TEXT NOT NULL,             -- 'sample' | 'region' | 'annotator'
    item_id      TEXT NOT NULL,
    reason       TEXT NOT NULL,
    detail       TEXT
);

CREATE TABLE dataset_exports (
    dataset_id   TEXT NOT NULL,
    format       TEXT NOT NULL,             -- hf | reward_json | sft
    path         TEXT NOT NULL,             -- relative to the workspace home
    n_files      INTEGER NOT NULL,
    created_at   TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (dataset_id, format)
);
