"""Filters and dedupe: each planted problem is excluded with its reason, and counted."""
import io

import numpy as np
from PIL import Image

from tests.fixtures.curation import png_bytes
from warehouse.curation import CurationConfig, build_dataset
from warehouse.curation.filters import dhash, hamming
from warehouse.db import Warehouse
from warehouse.imagestore import LocalImageStore


def test_dhash_is_perceptual(annotated_warehouse):
    store = LocalImageStore(annotated_warehouse.ws)
    wh = Warehouse.open(annotated_warehouse.ws)
    a, b = [r[0] for r in wh.query("SELECT edited_sha256 FROM samples ORDER BY sample_id LIMIT 2")]
    img = np.asarray(Image.open(io.BytesIO(store.get(a))))
    jpeg = io.BytesIO()
    Image.fromarray(img).save(jpeg, format="JPEG", quality=70)
    brighter = np.clip(img.astype(int) + 6, 0, 255).astype(np.uint8)
    h = dhash(store.get(a))
    assert hamming(h, dhash(jpeg.getvalue())) <= 4
    assert hamming(h, dhash(png_bytes(brighter))) <= 4
    assert hamming(h, dhash(store.get(b))) > 4          # same source, the other rollout's edit
    assert -(1 << 63) <= h < (1 << 63)


def test_every_exclusion_has_a_reason_and_count(annotated_warehouse):
    aw = annotated_warehouse
    ws = aw.ws
    wh = Warehouse.open(ws)
    store = LocalImageStore(ws)
    s = aw.sample_ids
    with wh.write() as con:
        # skipped: every annotation of s[4] cancelled
        con.execute("UPDATE annotations SET was_cancelled = true WHERE sample_id = ?", [s[4]])
        # all_invalid: s[5]
        con.execute("UPDATE annotations SET valid = false, invalid_reason = 'no regions' WHERE sample_id = ?", [s[5]])
        # incomplete: s[6] has no artifacts rating from anyone
        con.execute("UPDATE annotations SET artifacts = NULL WHERE sample_id = ?", [s[6]])
        # low agreement: s[7] overall ratings 1, 5, 1
        ids = [r[0] for r in con.execute("SELECT ls_annotation_id FROM annotations WHERE sample_id = ? "
                                         "ORDER BY ls_annotation_id", [s[7]]).fetchall()]
        for ann, v in zip(ids, (1, 5, 1)):
            con.execute("UPDATE annotations SET overall = ? WHERE ls_annotation_id = ?", [v, ann])
        # low-agreement region on s[8]: the edit region's success 1, 5, 5
        ids = [r[0] for r in con.execute("SELECT ls_annotation_id FROM annotations WHERE sample_id = ? "
                                         "ORDER BY ls_annotation_id", [s[8]]).fetchall()]
        for ann, v in zip(ids, (1, 5, 5)):
            con.execute("UPDATE annotation_regions SET success = ? WHERE ls_annotation_id = ? AND region_key = 'r0'",
                        [v, ann])
        # unrated region: nobody rated s[9]'s context region
        con.execute("UPDATE annotation_regions SET success = NULL, preserve = NULL WHERE region_key = 'r1' AND "
                    "ls_annotation_id IN (SELECT ls_annotation_id FROM annotations WHERE sample_id = ?)", [s[9]])
        # an unannotated sample
        con.execute("INSERT INTO samples (sample_id, batch_id, group_id, source_sha256, edited_sha256, instruction) "
                    "SELECT 'zz-unannotated', batch_id, group_id || '-x', source_sha256 || 'x', edited_sha256 || 'x', "
                    "instruction FROM samples WHERE sample_id = ?", [s[0]])
    # near duplicate: s[11]'s edited image replaced by a re-encoded copy of s[10]'s, submitted
    # again under another group (within one GRPO group near-identical rollouts are legitimate)
    def reencoded(sample_id):
        e = wh.query("SELECT edited_sha256 FROM samples WHERE sample_id = ?", [sample_id])[0][0]
        jpeg = io.BytesIO()
        Image.open(io.BytesIO(store.get(e))).save(jpeg, format="JPEG", quality=80)
        return store.put(jpeg.getvalue(), "JPEG")[0]

    g = dict(wh.query("SELECT sample_id, group_id FROM samples"))
    assert g[s[0]] == g[s[1]] and g[s[10]] == g[s[11]]
    sha11, sha1 = reencoded(s[10]), reencoded(s[0])
    with wh.write() as con:
        con.execute("UPDATE samples SET edited_sha256 = ?, group_id = group_id || '-again' WHERE sample_id = ?",
                    [sha11, s[11]])
        con.execute("UPDATE samples SET edited_sha256 = ? WHERE sample_id = ?", [sha1, s[1]])  # same group: kept

    v = build_dataset(ws, CurationConfig(dedupe_hamming=4))
    excl = {(r[0], r[1], r[2]) for r in wh.query(
        "SELECT item_kind, item_id, reason FROM dataset_exclusions WHERE dataset_id = ?", [v.dataset_id])}
    expected = {("sample", s[4], "skipped"), ("sample", s[5], "all_invalid"), ("sample", s[6], "incomplete"),
                ("sample", s[7], "low_agreement"), ("sample", s[11], "near_duplicate"),
                ("sample", "zz-unannotated", "not_annotated"),
                ("region", f"{s[8]}/{aw.regions[s[8]][0]['region_id']}", "low_agreement_region"),
                ("region", f"{s[9]}/{aw.regions[s[9]][1]['region_id']}", "unrated_region")}
    assert expected <= excl
    # The tiny context rectangle (area 36 < 64) is dropped from every sample that got that far.
    small = {e for e in excl if e[2] == "small_region"}
    assert len(small) == 24 - 5 and all(e[1].endswith(":2") for e in small)
    assert len(excl) == len(expected) + len(small)
    # Counted by reason, and the excluded samples are not in the dataset.
    assert v.exclusion_counts["sample:near_duplicate"] == 1 and v.exclusion_counts["region:small_region"] == 19
    assert sum(n for k, n in v.exclusion_counts.items() if k.startswith("sample:")) == 6
    kept = {r[0] for r in wh.query("SELECT sample_id FROM dataset_rows WHERE dataset_id = ?", [v.dataset_id])}
    assert kept == set(s) - {s[4], s[5], s[6], s[7], s[11]}
    assert v.n_rows == 19
    # s[8] keeps its other regions; the low-agreement one is gone.
    regions_s8 = {r[0] for r in wh.query("SELECT region_id FROM dataset_regions WHERE dataset_id = ? AND sample_id = ?",
                                         [v.dataset_id, s[8]])}
    assert aw.regions[s[8]][0]["region_id"] not in regions_s8 and len(regions_s8) == 2
