"""One real browser session: headless Debian Chromium driven by Playwright logs in, opens a
pushed task, sees both images, the instruction, the prefilled regions and the rating controls,
selects a region and sees its per-region ratings. Screenshots go to test-artifacts/."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from annotation import config as C
from annotation.push import push_batch
from tests.fixtures.labelstudio import seed_warehouse
from warehouse.db import Warehouse

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("SFR_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists(),
                                reason=f"Debian chromium not installed at {CHROMIUM} "
                                       "(run scripts/install_test_deps.sh as root)")


def test_annotator_sees_task_regions_and_ratings(labelstudio, tmp_path):
    from playwright.sync_api import sync_playwright

    seeded = seed_warehouse(labelstudio.workspace, tmp_path / "in", names=("astronaut",), rollouts=2, size=128)
    s = push_batch(labelstudio.workspace, "browser-test", batch_id=seeded["batch_id"], conn=labelstudio.conn)
    task_id = Warehouse.open(labelstudio.workspace).query(
        "SELECT ls_task_id FROM tasks WHERE project_key = 'browser-test' ORDER BY ls_task_id LIMIT 1")[0][0]
    data = labelstudio.client().tasks.get(id=task_id).data
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(labelstudio.base_url + "/user/login")
            page.fill("#email", labelstudio.email)
            page.fill("#password", labelstudio.password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/user/login" not in url)

            page.goto(f"{labelstudio.base_url}/projects/{s.ls_project_id}/data?task={task_id}")
            page.wait_for_selector("text=Whole image")
            # Both images loaded (natural size known) from local-files storage.
            for _ in range(60):
                sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.naturalWidth, e.currentSrc])")
                loaded = [src for w, src in sizes if w == 128 and "local-files" in src]
                if {data[C.SOURCE_KEY], data[C.EDITED_KEY]} <= {src.split(labelstudio.base_url)[-1] for src in loaded}:
                    break
                page.wait_for_timeout(500)
            else:
                raise AssertionError(f"the task's images did not load: {sizes}")
            body = page.inner_text("body")
            assert "make the box in the astronaut photo more colorful" in body
            for name in C.IMAGE_RATINGS + (C.OUTSIDE,):
                assert C._HINTS[name] in body
            assert C.GUIDELINES in body
            # The three prefilled proposal regions are listed.
            regions_panel = page.locator("[class*='outliner'], [class*='regions']").filter(has_text="background")
            assert regions_panel.count() > 0
            for kind in C.REGION_KINDS:
                assert page.get_by_text(kind, exact=True).count() >= 2  # label button + region item
            # Per-region controls are hidden until a region is selected.
            assert "Edit success here" not in body
            page.screenshot(path=str(ARTIFACTS / "labelstudio_task.png"), full_page=True)

            page.get_by_text("edit", exact=True).last.click()
            page.wait_for_selector("text=Edit success here")
            body = page.inner_text("body")
            assert "Preservation here" in body and "Verdict for this region" in body
            for v in C.VERDICTS:
                assert v in body
            page.screenshot(path=str(ARTIFACTS / "labelstudio_region_selected.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "labelstudio_region_selected.png").stat().st_size > 10_000
