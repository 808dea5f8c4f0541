-- Perceptual hashes of source images for near-duplicate split linking (cache; see
-- warehouse/curation/nearsource.py): one 256-bit dHash per (centre crop percent, dihedral
-- variant 0..7), stored as four signed 64-bit words h0..h3 (most significant first).
CREATE TABLE source_hashes (
    sha256   TEXT NOT NULL,
    method   TEXT NOT NULL,                 -- hashing method id; a new method re-hashes
    crop     SMALLINT NOT NULL,
    variant  SMALLINT NOT NULL,
    h0 BIGINT NOT NULL, h1 BIGINT NOT NULL, h2 BIGINT NOT NULL, h3 BIGINT NOT NULL,
    PRIMARY KEY (sha256, method, crop, variant)
);
