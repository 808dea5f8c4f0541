"""Edit masks that came with the data guide the proposer: they become `edit` regions marked
`provided`, changes they explain get no second region, other changes still do."""
import numpy as np
from PIL import Image

from sfreward.regions import ProposerConfig, propose_for_batch, propose_group
from sfreward.regions.store import load_regions
from tests.fixtures.core import photo
from tests.fixtures.regions import iou, paste_edit
from tests.sfreward.regions.test_proposer import check_partition
from warehouse.db import Warehouse

CFG = ProposerConfig()   # classical: no weights


def test_provided_mask_is_the_edit_region_and_replaces_the_change_it_explains():
    astro, chelsea = photo("astronaut", 128), photo("chelsea", 128)
    edited, truth = paste_edit(astro, chelsea, (70, 20, 110, 60))
    given = np.zeros(truth.shape, bool)
    given[16:64, 66:114] = True                       # a looser hand-drawn mask around the edit
    without = propose_group(astro, [edited], CFG)
    regions = propose_group(astro, [edited], CFG, provided=[given])
    check_partition(regions, truth.shape)
    first = regions[0]
    assert (first.kind, first.proposed_on) == ("edit", "provided")
    np.testing.assert_array_equal(first.mask, given)
    # Without it the change map finds the edit itself; with it, no second edit region for it.
    assert any(r.kind == "edit" and iou(r.mask, truth) > 0.5 for r in without)
    assert [r for r in regions if r.kind == "edit"] == [first]


def test_a_change_outside_the_provided_mask_still_gets_its_region():
    astro, chelsea = photo("astronaut", 128), photo("chelsea", 128)
    edited, truth = paste_edit(astro, chelsea, (70, 20, 110, 60))
    given = np.zeros(truth.shape, bool)
    given[90:110, 10:30] = True                       # the dataset's mask misses the real change
    regions = propose_group(astro, [edited], CFG, provided=[given])
    check_partition(regions, truth.shape)
    edits = [r for r in regions if r.kind == "edit"]
    assert edits[0].proposed_on == "provided" and np.array_equal(edits[0].mask, given)
    assert any(r.proposed_on != "provided" and iou(r.mask, truth) > 0.5 for r in edits[1:])


def test_ingested_magicbrush_masks_reach_the_stored_region_set(workspace, tmp_path):
    import datasets

    from warehouse.ingest import IngestConfig, ingest_path
    from warehouse.sources import SourceOptions

    astro, chelsea = photo("astronaut", 128), photo("chelsea", 128)
    edited, truth = paste_edit(astro, chelsea, (70, 20, 110, 60))
    feats = datasets.Features({"source_img": datasets.Image(), "target_img": datasets.Image(),
                               "mask_img": datasets.Image(), "instruction": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"source_img": [Image.fromarray(astro)], "target_img": [Image.fromarray(edited)],
                                     "mask_img": [Image.fromarray(truth.astype(np.uint8) * 255)],
                                     "instruction": ["put a cat in the corner"]}, features=feats)
    ds.save_to_disk(tmp_path / "mb")
    s = ingest_path(workspace, tmp_path / "mb", IngestConfig(source_options=SourceOptions("magicbrush")))
    assert s.ingested == 1
    out = propose_for_batch(workspace, s.batch_id, CFG)
    assert out["n_proposed"] == 1
    (sid,), = Warehouse.open(workspace).query("SELECT sample_id FROM samples")
    regions = load_regions(workspace, sid)
    assert (regions[0].kind, regions[0].proposed_on) == ("edit", "provided")
    np.testing.assert_array_equal(regions[0].mask, truth)
