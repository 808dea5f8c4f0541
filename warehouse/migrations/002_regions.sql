-- Region proposals. A region set is proposed once per GRPO group on the shared source image
-- (singletons are groups of one) for one proposer configuration.
CREATE TABLE region_sets (
    region_set_id  TEXT PRIMARY KEY,        -- hash(group_id, config_hash)
    group_id       TEXT NOT NULL,
    proposer       TEXT NOT NULL,           -- 'sam:vit_b', 'classical', ...
    config_hash    TEXT NOT NULL,
    config         TEXT NOT NULL,           -- JSON of the proposer config
    image_sha256   TEXT NOT NULL,           -- the source image regions are defined on
    height         INTEGER NOT NULL,
    width          INTEGER NOT NULL,
    n_regions      INTEGER NOT NULL,
    created_at     TIMESTAMP DEFAULT current_timestamp,
    UNIQUE (group_id, config_hash)
);

CREATE TABLE regions (
    region_id        TEXT PRIMARY KEY,      -- region_set_id + ':' + idx
    region_set_id    TEXT NOT NULL,
    idx              INTEGER NOT NULL,      -- 0..n-1; background is last
    kind             TEXT NOT NULL,         -- 'edit' | 'context' | 'background'
    rle              TEXT NOT NULL,         -- JSON COCO RLE {"size": [h, w], "counts": "..."}
    x1 INTEGER NOT NULL, y1 INTEGER NOT NULL, x2 INTEGER NOT NULL, y2 INTEGER NOT NULL,
    area             BIGINT NOT NULL,       -- pixels
    predicted_iou    DOUBLE,
    stability_score  DOUBLE,
    proposed_on      TEXT NOT NULL,         -- 'source' | 'edited' | 'both' | 'derived'
    change_fraction  DOUBLE                 -- fraction of the region's pixels in the change map
);
CREATE INDEX regions_set ON regions(region_set_id);
