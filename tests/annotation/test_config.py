"""The labeling config and the result parser (no server needed)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from annotation import config as C
from annotation.sync import parse_result
from warehouse import masks

from annotation.brush import mask_to_rle


def test_config_structure():
    root = ET.fromstring(C.LabelConfig().xml())
    by_name = {el.get("name"): el for el in root.iter() if el.get("name")}
    assert by_name["source"].tag == "Image" and by_name["source"].get("value") == "$source_image"
    assert by_name["edited"].tag == "Image" and by_name["edited"].get("value") == "$edited_image"
    assert by_name["instruction"].tag == "Text" and by_name["instruction"].get("value") == "$instruction"
    brush = by_name["region"]
    assert brush.tag == "BrushLabels" and brush.get("toName") == "edited"
    assert [lab.get("value") for lab in brush] == ["edit", "context", "background"]
    for name in ("success", "preserve"):
        el = by_name[name]
        assert (el.tag, el.get("perRegion"), el.get("maxRating"), el.get("toName")) == ("Rating", "true", "5", "edited")
    verdict = by_name["verdict"]
    assert verdict.tag == "Choices" and verdict.get("perRegion") == "true"
    assert [c.get("value") for c in verdict] == list(C.VERDICTS)
    for name in ("overall", "naturalness", "artifacts"):
        assert by_name[name].tag == "Rating" and by_name[name].get("perRegion") is None
    # Source and edited sit side by side in one flex row.
    row = next(v for v in root.iter("View") if "flex" in (v.get("style") or "") and len(v) == 2)
    assert [child.find("Image").get("name") for child in row] == ["source", "edited"]


def test_label_studio_sdk_parses_the_config():
    from label_studio_sdk.label_interface import LabelInterface

    li = LabelInterface(C.LabelConfig().xml())
    names = {c.name for c in li.controls}
    assert {"region", "success", "preserve", "verdict", "overall", "naturalness", "artifacts"} <= names
    assert set(li.get_control("region").labels) == set(C.REGION_KINDS)


def test_reward_scale():
    assert [C.to_reward_scale(s) for s in (1, 3, 5)] == [0.0, 12.5, 25.0]   # 1 star = bottom of 0..25
    assert C.to_reward_scale(None) is None


def _brush(rid, m, label="edit", size=None):
    h, w = size or m.shape
    return {"id": rid, "from_name": "region", "to_name": "edited", "type": "brushlabels",
            "original_width": w, "original_height": h, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(m), "brushlabels": [label]}}


def _rate(rid, name, v):
    return {"id": rid, "from_name": name, "to_name": "edited", "type": "rating", "value": {"rating": v}}


def _image(o=4, n=4, a=5):
    return [_rate("o", "overall", o), _rate("n", "naturalness", n), _rate("a", "artifacts", a)]


@pytest.fixture
def box():
    m = np.zeros((30, 40), bool)
    m[5:15, 10:30] = True
    return m


def test_parse_valid(box):
    res = [_brush("p0", box), _rate("p0", "success", 4), _rate("p0", "preserve", 3),
           {"id": "p0", "from_name": "verdict", "to_name": "edited", "type": "choices",
            "value": {"choices": ["artifact"]}},
           _brush("p1", ~box, "background"), _rate("p1", "preserve", 5)] + _image()
    pa = parse_result(res, 40, 30, "rs1")
    assert pa.valid and pa.invalid_reason is None
    assert pa.ratings == {"overall": 4, "naturalness": 4, "artifacts": 5}
    r0, r1 = pa.regions
    assert (r0.region_id, r0.kind, r0.success, r0.preserve, r0.verdict) == ("rs1:0", "edit", 4, 3, "artifact")
    assert np.array_equal(masks.decode(r0.rle), box) and r0.area == 200 and r0.bbox == (10, 5, 30, 15)
    assert (r1.region_id, r1.kind, r1.success, r1.preserve) == ("rs1:1", "background", None, 5)


@pytest.mark.parametrize("mutate, where, reason", [
    (lambda r: r.pop(2), "region", "missing preserve rating"),
    (lambda r: r.pop(1), "region", "missing success rating"),
    (lambda r: r[0]["value"].update(brushlabels=["sky"]), "region", "unknown label ['sky']"),
    (lambda r: r[1]["value"].update(rating=7), "region", "rating 7 outside 1..5"),
    (lambda r: r[0].update(original_width=99), "region", "mask drawn on a 99x30 image"),
    (lambda r: r[0].update(to_name="source"), "region", "region drawn on the 'source' image"),
    (lambda r: r[0]["value"].update(rle=mask_to_rle(np.zeros((30, 40), bool))), "region", "empty mask"),
    (lambda r: r[0]["value"].update(rle=mask_to_rle(np.ones((10, 40), bool))), "region", "RLE"),
    (lambda r: r.append(_rate("zz", "success", 3)), "annotation", "ratings for region 'zz' that has no mask"),
    (lambda r: r.pop(), "annotation", "missing artifacts rating"),
    (lambda r: r.append({"id": "q", "from_name": "mood", "type": "rating", "value": {}}), "annotation",
     "unknown control 'mood'"),
])
def test_parse_invalid(box, mutate, where, reason):
    res = [_brush("p0", box), _rate("p0", "success", 4), _rate("p0", "preserve", 3)] + _image()
    mutate(res)
    pa = parse_result(res, 40, 30, "rs1")
    assert not pa.valid
    assert reason in pa.invalid_reason
    if where == "region":
        assert reason in ", ".join(pa.regions[0].reasons)
    else:
        assert reason in "; ".join(pa.reasons)


def test_parse_no_regions_and_not_a_list():
    assert "no regions" in parse_result(_image(), 10, 10, None).invalid_reason
    assert not parse_result({"oops": 1}, 10, 10, None).valid


def test_drawn_region_has_no_proposal_id(box):
    res = [_brush("AbC123xyz", box, "context"), _rate("AbC123xyz", "success", 2),
           _rate("AbC123xyz", "preserve", 2)] + _image()
    (r,) = parse_result(res, 40, 30, "rs1").regions
    assert r.region_id is None and r.region_key == "AbC123xyz"


# ----------------------------------------------------------------- required ratings and defaults
def _choice(rid, name, v):
    return {"id": rid, "from_name": name, "to_name": "edited", "type": "choices", "value": {"choices": [v]}}


def test_config_requires_what_label_studio_must_enforce():
    root = ET.fromstring(C.LabelConfig().xml())
    by_name = {el.get("name"): el for el in root.iter() if el.get("name")}
    el = by_name["success"]
    assert (el.get("required"), el.get("perRegion"), el.get("whenLabelValue")) == ("true", "true", "edit")
    assert "selected" in el.get("requiredMessage")
    # Defaults instead of required clicks: edit preserve (5 unless artifact), image artifacts.
    assert by_name["preserve"].get("required") is None and by_name["preserve"].get("whenLabelValue") == "edit"
    po = by_name["preserve_outside"]
    assert po.get("required") is None and po.get("whenLabelValue") == "context,background"
    outside = by_name["outside"]
    assert outside.get("required") == "true" and [c.get("value") for c in outside] == [C.OUTSIDE_YES, C.OUTSIDE_NO]
    assert [by_name[n].get("required") for n in C.IMAGE_RATINGS] == ["true", "true", None]
    assert "unsure" in [c.get("value") for c in by_name["verdict"]]
    # Fixed keys, none of them an editor tool key (b brush, e eraser, ...).
    assert [lab.get("hotkey") for lab in by_name["region"]] == ["1", "2", "3"]
    assert [c.get("hotkey") for c in by_name["verdict"]] == ["6", "7", "8", "9", "0", "u"]
    assert [c.get("hotkey") for c in outside] == ["y", "n"]
    assert "1 = " in C.GUIDELINES and "5 = " in C.GUIDELINES
    assert f"opacity: {C.LabelConfig().region_opacity}" in root.find("Style").text


@pytest.fixture
def three(box):
    ctx = np.zeros_like(box)
    ctx[20:, :10] = True
    return box, ctx, ~(box | ctx)


def _three_regions(three, outside):
    edit, ctx, bg = three
    res = [_brush("p0", edit), _rate("p0", "success", 4),
           _brush("p1", ctx, "context"), _brush("p2", bg, "background")] + _image()[:2]
    return res + ([_choice("out", "outside", outside)] if outside else [])


def test_outside_yes_fills_defaults_and_records_them(three):
    pa = parse_result(_three_regions(three, C.OUTSIDE_YES), 40, 30, "rs1")
    assert pa.valid, pa.invalid_reason
    assert pa.outside_preserved is True
    e, c, b = pa.regions
    assert (e.success, e.preserve, e.verdict) == (4, 5, "correct_edit")
    assert (e.success_default, e.preserve_default, e.verdict_default) == (False, True, True)
    assert pa.ratings["artifacts"] == 5 and pa.image_defaults == ["artifacts"]
    assert (c.success, c.preserve, c.verdict) == (5, 5, "fine")
    assert (c.success_default, c.preserve_default, c.verdict_default) == (True, True, True)
    assert (b.success, b.preserve, b.verdict, b.preserve_default) == (None, 5, "fine", True)


def test_outside_no_rates_what_changed_and_defaults_the_rest(three):
    res = _three_regions(three, C.OUTSIDE_NO) + [_rate("p2", "preserve_outside", 2), _choice("p2", "verdict", "artifact")]
    pa = parse_result(res, 40, 30, "rs1")
    # A region marked artifact: the whole-image artifacts rating has no default any more.
    assert not pa.valid and pa.invalid_reason == "missing artifacts rating"
    pa = parse_result(res + [_rate("a", "artifacts", 2)], 40, 30, "rs1")
    assert pa.valid, pa.invalid_reason
    assert pa.ratings["artifacts"] == 2 and pa.image_defaults == []
    e, c, b = pa.regions
    assert (b.preserve, b.verdict, b.preserve_default, b.verdict_default) == (2, "artifact", False, False)
    assert (c.preserve, c.preserve_default) == (5, True)


def test_contradictions_and_incomplete_work_stay_invalid(three):
    # "Something changed" but nothing rated as changed.
    pa = parse_result(_three_regions(three, C.OUTSIDE_NO), 40, 30, "rs1")
    assert not pa.valid and "rated no context/background region" in pa.invalid_reason
    # Without the outside answer (an older config or an API client) nothing is filled.
    pa = parse_result(_three_regions(three, None), 40, 30, "rs1")
    assert not pa.valid and "region p1: missing preserve rating, missing success rating" in pa.invalid_reason
    # An edit region marked artifact needs its preserve rating; its success is never defaulted.
    res = _three_regions(three, C.OUTSIDE_YES) + [_choice("p0", "verdict", "artifact"), _rate("a", "artifacts", 3)]
    pa = parse_result(res, 40, 30, "rs1")
    assert not pa.valid and pa.invalid_reason == "region p0: missing preserve rating"
    res = [r for r in _three_regions(three, C.OUTSIDE_YES) if not (r["id"] == "p0" and r["from_name"] == "success")]
    pa = parse_result(res, 40, 30, "rs1")
    assert not pa.valid and pa.invalid_reason == "region p0: missing success rating"


def test_unsure_region_counts_as_missing_not_as_a_rating(three):
    res = _three_regions(three, C.OUTSIDE_YES) + [_choice("p0", "verdict", "unsure")]
    pa = parse_result(res, 40, 30, "rs1")
    assert pa.valid, pa.invalid_reason
    e = pa.regions[0]
    assert (e.success, e.preserve, e.verdict, e.verdict_default) == (None, None, "unsure", False)
