"""The whole round trip in a real browser, as an invited annotator (not the admin):

sign up through the organisation's invite link, open a pushed task, try to Submit an empty
annotation (Label Studio refuses and says why), then rate the edit region, fix its mask with
the brush AND the eraser, answer "something outside the edit changed", rate the changed
background, give the whole-image ratings and Submit. `sync` must then hold exactly the clicked
values, attributed to the invited annotator, with the untouched context region filled by the
recorded default. Screenshots (docs/roles/annotator.md) go to test-artifacts/.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from annotation import config as C
from annotation.brush import rle_to_mask
from annotation.client import LSHttp
from annotation.push import push_batch
from annotation.sync import sync_project
from tests.annotation.test_browser import ARGS, ARTIFACTS, CHROMIUM, pytestmark  # noqa: F401
from tests.fixtures.labelstudio import seed_warehouse
from warehouse import masks
from warehouse.db import Warehouse

SIZE = 128
ANNOTATOR = "invited.annotator@example.org"
PASSWORD = "Annotator-pw-7731"


def _rate(page, hint: str, n: int) -> None:
    xp = (f"xpath=//*[self::h4 or self::h5 or self::h6][normalize-space()={hint!r}]"
          "/following-sibling::div[1]//ul[contains(@class,'ant-rate')]")
    page.locator(xp).filter(visible=True).first.locator("li").nth(n - 1).locator("div[role=radio]").click()


def _choose(page, value: str) -> None:
    page.locator("label").filter(visible=True).filter(has_text=re.compile(rf"^{re.escape(value)}(\[|$)")).first.click()


def _stroke(page, box: dict, pts: list[tuple[float, float]]) -> None:
    """Drag the mouse through image pixel coordinates `pts` of the SIZE x SIZE image shown in `box`."""
    scale = min(box["width"], box["height"]) / SIZE
    xy = [(box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale) for x, y in pts]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


@pytest.mark.slow
def test_invited_annotator_round_trip(labelstudio, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ws = labelstudio.workspace
    seeded = seed_warehouse(ws, tmp_path / "in", names=("astronaut",), rollouts=1, size=SIZE)
    s = push_batch(ws, "roundtrip", batch_id=seeded["batch_id"], conn=labelstudio.conn)
    wh = Warehouse.open(ws)
    task_id, rsid = wh.query("SELECT ls_task_id, region_set_id FROM tasks WHERE project_key = 'roundtrip'")[0]
    before = {idx: masks.decode(rle) for idx, rle in wh.query(
        "SELECT idx, rle FROM regions WHERE region_set_id = ? ORDER BY idx", [rsid])}
    edit = before[0]
    ys, xs = np.nonzero(edit)
    # Brush: a horizontal stroke just below the edit box (context/background pixels before);
    # eraser: a stroke across the middle of the box.
    below = int(ys.max()) + 10
    add_pts = [(int(xs.min()) + 2, below), (int(xs.max()) - 2, below)]
    mid = (int(ys.min()) + int(ys.max())) // 2
    cut_pts = [(int(xs.min()) + 3, mid), (int(xs.max()) - 3, mid)]
    with LSHttp(labelstudio.conn) as http:
        invite = http.get("/api/invite")["invite_url"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1800})
            page.set_default_timeout(30_000)
            page.goto(labelstudio.base_url + invite)
            page.fill("#email", ANNOTATOR)
            page.fill("#password", PASSWORD)
            page.locator("form#signup-form button[type=submit], form#signup-form input[type=submit]").first.click()
            page.wait_for_url(lambda url: "/user/signup" not in url)

            page.goto(f"{labelstudio.base_url}/projects/{s.ls_project_id}/data?task={task_id}")
            page.wait_for_selector("[class*=tree-node-content-wrapper]")
            page.wait_for_selector("text=Overall quality of the edit")
            page.screenshot(path=str(ARTIFACTS / "annotator_task.png"))

            # Incomplete work is refused, with the reason, and the region at fault is selected.
            page.locator("button:has-text('Submit')").first.click()
            modal = page.locator(".ant-modal-content").filter(visible=True).first
            expect(modal).to_contain_text("Every edit region needs its success rating")
            page.screenshot(path=str(ARTIFACTS / "annotator_submit_refused.png"))
            modal.get_by_role("button", name="OK").click()
            expect(modal).to_be_hidden()

            # Label Studio selected the edit region that lacks its ratings.
            nodes = page.locator("[class*=tree-node-content-wrapper]")
            expect(nodes.nth(0)).to_have_class(re.compile("tree-node-selected"))
            _rate(page, C._HINTS[C.SUCCESS], 4)
            _rate(page, C._HINTS[C.PRESERVE], 3)
            _choose(page, "artifact")
            # Mask fix on the selected edit region: brush adds, eraser removes.
            # The edited image's stage (the image fits its width; mapping is approximate, see below).
            stage = page.locator(".konvajs-content").nth(1).bounding_box()
            page.keyboard.press("b")
            _stroke(page, stage, add_pts)
            page.keyboard.press("e")
            _stroke(page, stage, cut_pts)
            page.screenshot(path=str(ARTIFACTS / "annotator_region_rated.png"))

            nodes.nth(2).click()
            expect(nodes.nth(2)).to_have_class(re.compile("tree-node-selected"))
            _rate(page, C._HINTS[C.PRESERVE_OUTSIDE], 2)
            _choose(page, "unintended_change")
            _choose(page, C.OUTSIDE_NO)
            for name, n in ((C.OVERALL, 3), (C.NATURALNESS, 4), (C.ARTIFACTS, 5)):
                _rate(page, C._HINTS[name], n)
            page.screenshot(path=str(ARTIFACTS / "annotator_complete.png"))
            with page.expect_response(lambda r: r.request.method == "POST" and "/annotations" in r.url
                                      and r.status == 201):
                page.locator("button:has-text('Submit')").first.click()
        finally:
            browser.close()

    sync_project(ws, "roundtrip", conn=labelstudio.conn)
    ann = wh.query_dicts("SELECT a.*, u.email FROM annotations a JOIN annotators u USING (annotator_id) "
                         "WHERE a.project_key = 'roundtrip'")
    assert len(ann) == 1
    a = ann[0]
    assert a["email"] == ANNOTATOR and a["email"] != labelstudio.email
    assert a["valid"], a["invalid_reason"]
    assert (a["overall"], a["naturalness"], a["artifacts"], a["outside_preserved"]) == (3, 4, 5, False)
    regs = {r["region_key"]: r for r in wh.query_dicts(
        "SELECT * FROM annotation_regions WHERE project_key = 'roundtrip' ORDER BY region_key")}
    assert set(regs) == {"p0", "p1", "p2"}
    e, c, b = regs["p0"], regs["p1"], regs["p2"]
    assert (e["kind"], e["success"], e["preserve"], e["verdict"]) == ("edit", 4, 3, "artifact")
    assert not (e["success_default"] or e["preserve_default"] or e["verdict_default"])
    assert (b["kind"], b["preserve"], b["verdict"], b["preserve_default"], b["verdict_default"]) == \
        ("background", 2, "unintended_change", False, False)
    assert (c["kind"], c["preserve"], c["verdict"], c["preserve_default"], c["verdict_default"]) == \
        ("context", 5, "fine", True, True)
    # The mask fix. Exactly what Label Studio saved is in the warehouse (pixel for pixel) ...
    with LSHttp(labelstudio.conn) as http:
        saved = http.get(f"/api/tasks/{task_id}/annotations/")[-1]["result"]
    brush = next(r for r in saved if r["id"] == "p0" and r["from_name"] == C.BRUSH)
    fixed = masks.decode(e["rle"])
    assert np.array_equal(fixed, rle_to_mask(brush["value"]["rle"], SIZE, SIZE))
    # ... and it is the prefilled mask plus the brushed band (below the box) minus the erased band
    # (inside the box). The screen-to-image mapping is approximate (the stage's fit), so the
    # bands are located with a margin; nothing else changed.
    added, removed = np.nonzero(fixed & ~edit), np.nonzero(edit & ~fixed)
    diag = f"added rows {sorted(set(added[0].tolist()))}, removed rows {sorted(set(removed[0].tolist()))}"
    assert added[0].size >= 20 and np.all(added[0] > ys.max()) and np.all(np.abs(added[0] - below) <= 12), diag
    assert removed[0].size >= 20 and np.all(np.abs(removed[0] - mid) <= 12), diag
    assert np.ptp(added[0]) <= 8 and np.ptp(removed[0]) <= 8, diag   # one stroke each, not a smear
