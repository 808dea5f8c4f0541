"""Every asset that talks to Label Studio runs in the `labelstudio` pool and training in the
`training` pool (deploy/dagster.postgres.yaml limits both); the pools an asset can take are the
ones the production instance documents."""
import re
from pathlib import Path

import dagster as dg

from pipelines.definitions import defs
from pipelines.resources import LABELSTUDIO_POOL, TRAINING_POOL, WAREHOUSE_POOL

ROOT = Path(__file__).resolve().parents[2]


def _assets() -> dict[str, dg.AssetsDefinition]:
    return {a.key.to_user_string(): a for a in defs.assets if isinstance(a, dg.AssetsDefinition)}


def test_labelstudio_and_training_pools():
    assets = _assets()
    for name in ("annotation_tasks", "synced_annotations", "simulated_annotations"):
        assert assets[name].op.pool == LABELSTUDIO_POOL, name
    assert assets["sfreward_model"].op.pool == TRAINING_POOL
    # every asset whose kinds say it talks to Label Studio is in that pool
    for name, a in assets.items():
        kinds = a.specs_by_key[a.key].kinds
        if "labelstudio" in kinds:
            assert a.op.pool == LABELSTUDIO_POOL, name
    # the curation assets keep the warehouse pool
    assert assets["dataset_version"].op.pool == WAREHOUSE_POOL


def test_pools_are_documented_in_the_production_instance():
    text = (ROOT / "deploy/dagster.postgres.yaml").read_text()
    documented = set(re.findall(r"dagster instance concurrency set (\w+)", text))
    used = {a.op.pool for a in _assets().values() if a.op.pool}
    assert {LABELSTUDIO_POOL, TRAINING_POOL} <= used
    assert used <= documented, used - documented
