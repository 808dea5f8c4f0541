-- SFReward model registry: trained artifacts with lineage, aliases, evaluations.
CREATE TABLE models (
    model_id        TEXT PRIMARY KEY,        -- 'sfr-<utc time>-<sha prefix>'
    path            TEXT NOT NULL,           -- artifact directory, relative to the home
    weights_sha256  TEXT NOT NULL,
    dataset_id      TEXT,                    -- dataset version trained on
    parent_model_id TEXT,                    -- model it was fine-tuned from
    train_config    TEXT NOT NULL,           -- JSON (TrainConfig)
    model_config    TEXT NOT NULL,           -- JSON (SFRewardConfig)
    code_version    TEXT NOT NULL,           -- git sha, else package version
    metrics         TEXT,                    -- JSON: training / validation metrics
    n_params        BIGINT,
    created_at      TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE model_aliases (
    alias       TEXT PRIMARY KEY,            -- 'candidate' | 'production' | ...
    model_id    TEXT NOT NULL,
    previous_model_id TEXT,
    updated_at  TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE evaluations (
    evaluation_id TEXT PRIMARY KEY,          -- model_id + ':' + dataset_id + ':' + split
    model_id      TEXT NOT NULL,
    dataset_id    TEXT NOT NULL,
    split         TEXT NOT NULL,
    metrics       TEXT NOT NULL,             -- JSON (sfreward.evaluate)
    code_version  TEXT,
    created_at    TIMESTAMP DEFAULT current_timestamp
);
CREATE INDEX evaluations_model ON evaluations(model_id);
