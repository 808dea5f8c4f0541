"""CurationConfig.default_ratings: default-filled ratings (migration 010 flags) counted like
clicks ('count', the old behaviour and ids) or treated as missing ('ignore'). Planted ratings and
flags on a tiny warehouse; expected values computed from the plants."""
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.fixtures.curation import make_annotated_warehouse
from warehouse.curation import CurationConfig, build_dataset, export_hf
from warehouse.curation.aggregate import aggregate_into_tables, prepare_current
from warehouse.db import Warehouse
from warehouse.scale import stars_to_reward

CFG = dict(dedupe_hamming=-1, fractions=(0.5, 0.25, 0.25))
# CurationConfig().hash() computed by the code before default_ratings existed: datasets built
# with the default config must keep their ids.
HASH_BEFORE_FIELD = "35b6bed276702f1f6bff4aba725c8b2a433653048cfc0cf69454ca100e3b2505"


def test_config_count_keeps_hash_ignore_changes_it_bad_value_refused():
    assert CurationConfig().hash() == HASH_BEFORE_FIELD
    assert CurationConfig(default_ratings="count").hash() == HASH_BEFORE_FIELD
    assert "default_ratings" not in CurationConfig().to_dict()
    ignore = CurationConfig(default_ratings="ignore")
    assert ignore.to_dict()["default_ratings"] == "ignore" and ignore.hash() != HASH_BEFORE_FIELD
    assert CurationConfig.from_dict(ignore.to_dict()) == ignore
    with pytest.raises(ValueError, match=r"default_ratings must be one of \('count', 'ignore'\).*got 'skip'"):
        CurationConfig(default_ratings="skip")


@pytest.fixture
def planted(curation_ws):
    """Two samples, three annotators, no noise. On s0: the edit region's success 4 (default, first
    annotator), 2, 3; the context region (idx 1) rated only by default (success, preserve,
    verdict); the background's preserve only by default; artifacts 5 (default, second annotator),
    2, 3. On s1 every annotator's artifacts is a default."""
    aw = make_annotated_warehouse(curation_ws, n_samples=2, n_annotators=3, noise=0.0, seed=0, n_gold=0)
    s0, s1 = aw.sample_ids
    regs = {r["idx"]: r["region_id"] for r in aw.regions[s0]}
    wh = Warehouse.open(curation_ws)
    with wh.write() as con:
        ids = [r[0] for r in con.execute("SELECT ls_annotation_id FROM annotations WHERE sample_id = ? "
                                         "ORDER BY annotator_id", [s0]).fetchall()]
        for ann, succ, art in zip(ids, (4, 2, 3), (2, 5, 3)):
            con.execute("UPDATE annotation_regions SET success = ? WHERE ls_annotation_id = ? AND region_id = ?",
                        [succ, ann, regs[0]])
            con.execute("UPDATE annotations SET artifacts = ? WHERE ls_annotation_id = ?", [art, ann])
    flags = [
        ("UPDATE annotation_regions SET success_default = true WHERE ls_annotation_id = ? AND region_id = ?",
         [ids[0], regs[0]]),
        ("UPDATE annotation_regions SET success_default = true, preserve_default = true, verdict_default = true "
         "WHERE region_id = ? AND ls_annotation_id IN (SELECT ls_annotation_id FROM annotations WHERE sample_id = ?)",
         [regs[1], s0]),
        ("UPDATE annotation_regions SET preserve_default = true WHERE region_id = ? AND ls_annotation_id IN "
         "(SELECT ls_annotation_id FROM annotations WHERE sample_id = ?)", [regs[3], s0]),
        ("UPDATE annotations SET artifacts_default = true WHERE ls_annotation_id = ?", [ids[1]]),
        ("UPDATE annotations SET artifacts_default = true WHERE sample_id = ?", [s1]),
    ]
    return aw, wh, s0, s1, regs, flags


def _set_flags(wh, flags) -> None:
    with wh.write() as con:
        for sql, params in flags:
            con.execute(sql, params)


def _aggregates(wh, default_ratings: str) -> tuple[dict, dict]:
    with wh.write() as con:
        prepare_current(con, default_ratings=default_ratings)
        aggregate_into_tables(con, persist=False)
        cur = con.execute("SELECT * FROM cur_agg_samples ORDER BY sample_id")
        cols = [d[0] for d in cur.description]
        samples = {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}
        cur = con.execute("SELECT * FROM cur_agg_regions ORDER BY sample_id, region_id")
        cols = [d[0] for d in cur.description]
        regions = {(r[0], r[1]): dict(zip(cols, r)) for r in cur.fetchall()}
    return samples, regions


def test_count_ignores_the_flags_ignore_drops_defaulted_ratings(planted):
    aw, wh, s0, s1, regs, flags = planted
    before = _aggregates(wh, "count")
    _set_flags(wh, flags)
    assert _aggregates(wh, "count") == before           # 'count': the flags change nothing

    samples, regions = before
    edit = regions[(s0, regs[0])]
    assert (edit["success_n"], edit["success_median"]) == (3, 3.0)
    assert edit["success_mean"] == pytest.approx(np.mean([4, 2, 3]))
    assert samples[s0]["artifacts_median"] == 3.0 and samples[s0]["n_complete"] == 3

    samples, regions = _aggregates(wh, "ignore")
    edit = regions[(s0, regs[0])]
    assert (edit["success_n"], edit["success_mean"], edit["success_median"]) == (2, 2.5, 2.5)
    assert edit["success_std"] == pytest.approx(np.std([2, 3]))
    assert edit["preserve_n"] == 3                     # its preserve was clicked: unchanged
    ctx = regions[(s0, regs[1])]
    assert (ctx["success_n"], ctx["preserve_n"], ctx["success_mean"], ctx["preserve_mean"], ctx["verdict"]) \
        == (0, 0, None, None, None)
    bg = regions[(s0, regs[3])]
    assert (bg["preserve_n"], bg["preserve_median"], bg["success_n"]) == (0, None, 3)
    # Image level: s0's defaulted artifacts left out (2 and 3 remain); that annotation is incomplete.
    assert (samples[s0]["artifacts_mean"], samples[s0]["artifacts_median"]) == (2.5, 2.5)
    assert samples[s0]["n_complete"] == 2 and samples[s0]["n_annotators"] == 3
    assert samples[s0]["overall_mean"] == before[0][s0]["overall_mean"]   # other dims untouched
    assert samples[s1]["n_complete"] == 0 and samples[s1]["artifacts_mean"] is None


def test_dataset_ids_and_export(planted, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    aw, wh, s0, s1, regs, flags = planted
    v_before = build_dataset(aw.ws, CurationConfig(**CFG))
    _set_flags(wh, flags)
    v_count = build_dataset(aw.ws, CurationConfig(**CFG, default_ratings="count"))
    assert v_count.dataset_id == v_before.dataset_id   # same rows, same config hash

    v = build_dataset(aw.ws, CurationConfig(**CFG, default_ratings="ignore"))
    assert v.dataset_id != v_before.dataset_id
    excl = set(wh.query("SELECT item_kind, item_id, reason FROM dataset_exclusions WHERE dataset_id = ?",
                        [v.dataset_id]))
    assert ("region", f"{s0}/{regs[1]}", "unrated_region") in excl   # rated only by default
    assert ("sample", s1, "incomplete") in excl                       # every artifacts a default
    assert not [e for e in excl if e[1] == s0]                        # s0 itself stays

    out = export_hf(aw.ws, v.dataset_id)
    rows = [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert [r["sample_id"] for r in rows] == [s0]
    row = rows[0]
    assert row["artifacts"] == pytest.approx(stars_to_reward(2.5))
    by_id = {g["region_id"]: g for g in row["regions"]}
    assert regs[1] not in by_id
    assert by_id[regs[0]]["success"] == pytest.approx(stars_to_reward(2.5))
    assert math.isnan(by_id[regs[3]]["preserve"]) and not math.isnan(by_id[regs[3]]["success"])
