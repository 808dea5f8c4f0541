-- The data flywheel (sfreward.flywheel): which captured rollouts the sampling policy sent to
-- annotation. One decision per batch, recorded once: a rerun reads it back instead of choosing
-- again, and the daily budget counts every selection of a capture day across batches.
CREATE TABLE flywheel_decisions (
    batch_id       TEXT PRIMARY KEY,
    policy         TEXT NOT NULL,          -- 'std' | 'disagreement' (what 'auto' resolved to)
    production_id  TEXT,                   -- production model at decision time (NULL: none registered)
    candidate_id   TEXT,                   -- candidate compared against (policy 'disagreement' only)
    config         TEXT NOT NULL,          -- FlywheelConfig as JSON
    n_candidates   INTEGER NOT NULL,       -- rollouts of the batch in the warehouse
    n_scored       INTEGER NOT NULL,       -- of those, with a finite score
    n_selected     INTEGER NOT NULL,
    decided_at     TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE flywheel_selections (
    sample_id      TEXT PRIMARY KEY,
    batch_id       TEXT NOT NULL,
    day            DATE NOT NULL,          -- UTC capture day whose budget it used
    rank           INTEGER NOT NULL,       -- 1 = the batch's first pick
    score          DOUBLE NOT NULL,        -- predicted std or |candidate - production|, 0..25
    selected_at    TIMESTAMP DEFAULT current_timestamp
);
CREATE INDEX flywheel_selections_day ON flywheel_selections(day);
CREATE INDEX flywheel_selections_batch ON flywheel_selections(batch_id);
