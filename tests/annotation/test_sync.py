"""Sync against a real Label Studio: annotations created, updated and deleted through the API as
annotators would, then checked row for row in the warehouse."""
from __future__ import annotations

import json

import numpy as np
import pytest

from annotation.client import LSHttp
from annotation.push import push_batch
from annotation.sync import sync_project
from tests.fixtures.labelstudio import seed_warehouse
from warehouse import masks
from warehouse.db import Warehouse

from annotation.brush import mask_to_rle, rle_to_mask

KEY = "sync-main"


@pytest.fixture(scope="module")
def project(labelstudio, tmp_path_factory):
    seeded = seed_warehouse(labelstudio.workspace, tmp_path_factory.mktemp("incoming"),
                            names=("astronaut", "chelsea"), rollouts=2, singletons=("coffee",))
    s = push_batch(labelstudio.workspace, KEY, batch_id=seeded["batch_id"], conn=labelstudio.conn)
    wh = Warehouse.open(labelstudio.workspace)
    tasks = dict(wh.query("SELECT sample_id, ls_task_id FROM tasks WHERE project_key = ?", [KEY]))
    return {"pid": s.ls_project_id, "tasks": tasks, "sample_ids": seeded["sample_ids"]}


def _prediction(labelstudio, task_id):
    (p,) = labelstudio.client().predictions.list(task=task_id)
    return p.result


def _ratings(regions: dict[str, tuple[int | None, int | None, str | None]], overall=(4, 4, 5)) -> list[dict]:
    out = []
    for rid, (success, preserve, verdict) in regions.items():
        if success is not None:
            out.append({"id": rid, "from_name": "success", "to_name": "edited", "type": "rating",
                        "value": {"rating": success}})
        if preserve is not None:
            out.append({"id": rid, "from_name": "preserve", "to_name": "edited", "type": "rating",
                        "value": {"rating": preserve}})
        if verdict is not None:
            out.append({"id": rid, "from_name": "verdict", "to_name": "edited", "type": "choices",
                        "value": {"choices": [verdict]}})
    for rid, name, v in zip(("o1", "n1", "a1"), ("overall", "naturalness", "artifacts"), overall):
        if v is not None:
            out.append({"id": rid, "from_name": name, "to_name": "edited", "type": "rating", "value": {"rating": v}})
    return out


def _wh_current(wh):
    return {r["ls_annotation_id"]: r for r in wh.query_dicts(
        "SELECT * FROM annotations WHERE project_key = ?", [KEY])}


def _wh_regions(wh, ann_id):
    return {r["region_key"]: r for r in wh.query_dicts(
        "SELECT * FROM annotation_regions WHERE project_key = ? AND ls_annotation_id = ?", [KEY, ann_id])}


@pytest.fixture(scope="module")
def first_round(labelstudio, project):
    """Annotators work: one full valid annotation with an edited mask and a drawn region, one
    invalid one, one skipped; then sync."""
    ls = labelstudio.client()
    sids = project["sample_ids"]
    t0, t1, t2 = (project["tasks"][s] for s in sids[:3])
    pred = _prediction(labelstudio, t0)
    # Annotator grows the edit mask by a 2-pixel band and draws a new context region.
    edit = next(r for r in pred if r["id"] == "p0")
    h, w = edit["original_height"], edit["original_width"]
    m = rle_to_mask(edit["value"]["rle"], h, w)
    grown = m.copy()
    ys, xs = np.nonzero(m)
    grown[max(ys.min() - 2, 0):ys.max() + 3, max(xs.min() - 2, 0):xs.max() + 3] = True
    drawn = np.zeros((h, w), bool)
    drawn[2:10, 40:60] = True
    regions = [dict(r) for r in pred]
    regions[0] = {**edit, "value": {**edit["value"], "rle": mask_to_rle(grown)}}
    regions.append({"id": "Xy12AbC9zz", "from_name": "region", "to_name": "edited", "type": "brushlabels",
                    "original_width": w, "original_height": h, "image_rotation": 0,
                    "value": {"format": "rle", "rle": mask_to_rle(drawn), "brushlabels": ["context"]}})
    result0 = regions + _ratings({"p0": (4, 5, "correct_edit"), "p1": (3, 4, "fine"), "p2": (None, 5, "fine"),
                                  "Xy12AbC9zz": (2, 2, "unintended_change")})
    a0 = ls.annotations.create(id=t0, result=result0, lead_time=12.5)

    # Invalid: missing preserve on p0, unknown label on p1, empty mask on p2, wrong-size RLE on a
    # drawn region, and a rating for a region that does not exist; naturalness missing.
    pred1 = _prediction(labelstudio, t1)
    bad = [dict(r) for r in pred1]
    bad[1] = {**bad[1], "value": {**bad[1]["value"], "brushlabels": ["sky"]}}
    bad[2] = {**bad[2], "value": {**bad[2]["value"], "rle": mask_to_rle(np.zeros((h, w), bool))}}
    bad.append({"id": "wrongsize1", "from_name": "region", "to_name": "edited", "type": "brushlabels",
                "original_width": w, "original_height": h, "image_rotation": 0,
                "value": {"format": "rle", "rle": mask_to_rle(np.ones((h // 2, w), bool)), "brushlabels": ["edit"]}})
    result1 = bad + _ratings({"p0": (4, None, "fine"), "p1": (3, 3, None), "p2": (None, 3, None),
                              "wrongsize1": (3, 3, None), "ghost": (5, 5, None)}, overall=(3, None, 4))
    a1 = ls.annotations.create(id=t1, result=result1, lead_time=3.0)
    a2 = ls.annotations.create(id=t2, result=[], was_cancelled=True)
    summary = sync_project(labelstudio.workspace, KEY, conn=labelstudio.conn)
    return {"a0": a0.id, "a1": a1.id, "a2": a2.id, "t0": t0, "t1": t1, "grown": grown, "drawn": drawn,
            "result0": result0, "summary": summary}


def test_first_sync_counts(first_round):
    s = first_round["summary"]
    assert (s.created, s.updated, s.deleted, s.invalid) == (3, 0, 0, 2)
    assert s.cursor is not None


def test_valid_annotation_row_for_row(labelstudio, project, first_round):
    wh = Warehouse.open(labelstudio.workspace)
    cur = _wh_current(wh)
    a = cur[first_round["a0"]]
    sid = project["sample_ids"][0]
    assert (a["task_key"], a["sample_id"], a["version"], a["valid"], a["invalid_reason"]) == (f"{KEY}:{sid}", sid, 1, True, None)
    assert (a["overall"], a["naturalness"], a["artifacts"], a["is_deleted"], a["was_cancelled"]) == (4, 4, 5, False, False)
    assert a["annotator_id"].startswith("ls:1@127.0.0.1:")
    assert wh.query("SELECT email FROM annotators WHERE annotator_id = ?", [a["annotator_id"]]) == [(labelstudio.email,)]
    regions = _wh_regions(wh, first_round["a0"])
    assert set(regions) == {"p0", "p1", "p2", "Xy12AbC9zz"}
    set_id = wh.query("SELECT region_set_id FROM tasks WHERE task_key = ?", [a["task_key"]])[0][0]
    want = {"p0": (f"{set_id}:0", "edit", 4, 5, "correct_edit"), "p1": (f"{set_id}:1", "context", 3, 4, "fine"),
            "p2": (f"{set_id}:2", "background", None, 5, "fine"),
            "Xy12AbC9zz": (None, "context", 2, 2, "unintended_change")}
    for k, (rid, kind, su, pr, ve) in want.items():
        r = regions[k]
        assert (r["region_id"], r["kind"], r["success"], r["preserve"], r["verdict"], r["valid"]) == (rid, kind, su, pr, ve, True)
    g = masks.decode(regions["p0"]["rle"])
    assert np.array_equal(g, first_round["grown"])
    assert regions["p0"]["area"] == int(first_round["grown"].sum())
    assert (regions["p0"]["x1"], regions["p0"]["y1"], regions["p0"]["x2"], regions["p0"]["y2"]) == masks.bbox_xyxy(g)
    assert np.array_equal(masks.decode(regions["Xy12AbC9zz"]["rle"]), first_round["drawn"])
    (v,) = wh.query_dicts("SELECT * FROM annotation_versions WHERE project_key = ? AND ls_annotation_id = ?",
                          [KEY, first_round["a0"]])
    assert json.loads(v["result"]) == first_round["result0"] and v["lead_time"] == 12.5 and v["version"] == 1


def test_invalid_results_are_kept_with_reasons(labelstudio, first_round):
    wh = Warehouse.open(labelstudio.workspace)
    a = _wh_current(wh)[first_round["a1"]]
    assert a["valid"] is False
    for needle in ("missing naturalness rating", "ratings for region 'ghost' that has no mask"):
        assert needle in a["invalid_reason"]
    r = _wh_regions(wh, first_round["a1"])
    assert "missing preserve rating" in r["p0"]["invalid_reason"] and not r["p0"]["valid"]
    assert "unknown label ['sky']" in r["p1"]["invalid_reason"]
    assert "empty mask" in r["p2"]["invalid_reason"] and r["p2"]["rle"] is None
    assert "RLE" in r["wrongsize1"]["invalid_reason"]
    skipped = _wh_current(wh)[first_round["a2"]]
    assert skipped["was_cancelled"] and not skipped["valid"] and "skipped" in skipped["invalid_reason"]


def test_resync_without_changes_writes_nothing(labelstudio, first_round):
    wh = Warehouse.open(labelstudio.workspace)
    n = wh.query("SELECT count(*) FROM annotation_versions")[0][0]
    s = sync_project(labelstudio.workspace, KEY, conn=labelstudio.conn)
    assert (s.created, s.updated, s.deleted) == (0, 0, 0)
    assert wh.query("SELECT count(*) FROM annotation_versions")[0][0] == n


def test_update_and_delete_keep_history(labelstudio, project, first_round):
    ls = labelstudio.client()
    ws = labelstudio.workspace
    # Update: the annotator fixes the invalid annotation (adds the missing ratings, drops the junk).
    pred1 = _prediction(labelstudio, first_round["t1"])
    fixed = pred1 + _ratings({"p0": (4, 4, "fine"), "p1": (3, 3, None), "p2": (None, 3, None)})
    ls.annotations.update(id=first_round["a1"], result=fixed)
    ls.annotations.delete(id=first_round["a0"])
    t3 = project["tasks"][project["sample_ids"][3]]
    a3 = ls.annotations.create(id=t3, result=pred1[:1] + _ratings({"p0": (5, 5, "correct_edit")}))
    s = sync_project(ws, KEY, conn=labelstudio.conn)
    assert (s.created, s.updated, s.deleted) == (1, 1, 1)
    wh = Warehouse.open(ws)
    cur = _wh_current(wh)
    a1 = cur[first_round["a1"]]
    assert (a1["version"], a1["valid"], a1["naturalness"]) == (2, True, 4)
    assert len(_wh_regions(wh, first_round["a1"])) == 3
    versions = wh.query("SELECT version, is_deleted FROM annotation_versions WHERE project_key = ? AND "
                        "ls_annotation_id = ? ORDER BY version", [KEY, first_round["a1"]])
    assert versions == [(1, False), (2, False)]
    a0 = cur[first_round["a0"]]
    assert a0["is_deleted"] and a0["version"] == 2 and _wh_regions(wh, first_round["a0"]) == {}
    assert wh.query("SELECT version, is_deleted, result IS NULL FROM annotation_versions WHERE project_key = ? "
                    "AND ls_annotation_id = ? ORDER BY version", [KEY, first_round["a0"]]) == [(1, False, False), (2, True, True)]
    assert cur[a3.id]["valid"]
    # Row for row: live annotations in the warehouse are exactly those in Label Studio.
    with LSHttp(labelstudio.conn) as http:
        live = {a["id"]: a for page in http.iter_tasks(project["pid"], all_fields=True) for t in page
                for a in t["annotations"]}
    assert {k for k, v in cur.items() if not v["is_deleted"]} == set(live)
    for k, a in live.items():
        last = wh.query("SELECT result FROM annotation_versions WHERE project_key = ? AND ls_annotation_id = ? "
                        "AND version = ?", [KEY, k, cur[k]["version"]])[0][0]
        assert json.loads(last) == a["result"]


def test_deleted_task_marks_its_annotations_deleted(labelstudio, project, first_round):
    ls = labelstudio.client()
    t3 = project["tasks"][project["sample_ids"][3]]
    ls.tasks.delete(id=t3)
    s = sync_project(labelstudio.workspace, KEY, conn=labelstudio.conn)
    assert s.full_task_check and s.deleted == 1
    wh = Warehouse.open(labelstudio.workspace)
    rows = wh.query("SELECT is_deleted FROM annotations WHERE task_key = ?", [f"{KEY}:{project['sample_ids'][3]}"])
    assert rows == [(True,)]


def test_webhook_triggers_a_sync(labelstudio, project, first_round):
    import threading
    import time

    import uvicorn

    from annotation.server import free_port
    from annotation.webhook import register_webhook, webhook_app

    ws = labelstudio.workspace
    app = webhook_app(ws, conn=labelstudio.conn)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        for _ in range(100):
            if srv.started:
                break
            time.sleep(0.05)
        hook = register_webhook(ws, KEY, f"http://127.0.0.1:{port}/labelstudio", conn=labelstudio.conn)
        assert register_webhook(ws, KEY, f"http://127.0.0.1:{port}/labelstudio", conn=labelstudio.conn) == hook
        t4 = project["tasks"][project["sample_ids"][4]]
        a = labelstudio.client().annotations.create(id=t4, result=_ratings({}))
        wh = Warehouse.open(ws)
        for _ in range(120):
            if wh.query("SELECT count(*) FROM annotations WHERE ls_annotation_id = ?", [a.id])[0][0]:
                break
            time.sleep(0.25)
        else:
            raise AssertionError("the webhook did not trigger a sync within 30 s")
        co = app.state.coalescer
        for _ in range(100):  # let the background sync finish before the module's server stops
            if not co.running:
                break
            time.sleep(0.1)
        assert co.runs >= 1
    finally:
        srv.should_exit = True
        th.join(timeout=10)


def test_window_start_rereads_only_what_a_racing_commit_could_hide():
    from annotation.sync import _window_start

    assert _window_start(None, None, 5) is None
    # No listing time known: the cursor minus the overlap.
    assert _window_start("2026-01-01T00:00:10Z", None, 5) == "2026-01-01T00:00:05.000000Z"
    # The previous listing ran long after the newest change: nothing can hide before the cursor.
    assert _window_start("2026-01-01T00:00:10Z", "2026-01-01T00:01:00Z", 5) == "2026-01-01T00:00:10.000000Z"
    # The previous listing ran 2 s after the newest change: re-read from listing time - overlap.
    assert _window_start("2026-01-01T00:00:10Z", "2026-01-01T00:00:12Z", 5) == "2026-01-01T00:00:07.000000Z"
