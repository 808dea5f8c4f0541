"""Pushing samples to a real Label Studio: tasks, prefilled regions, served images, idempotency,
crash recovery (kill the server mid-push, restart, push again)."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from annotation import server
from annotation.client import LabelStudioError, LSHttp
from annotation.push import PushConfig, existing_task_ids, push_batch
from tests.fixtures.labelstudio import seed_warehouse
from warehouse import masks
from warehouse.db import Warehouse

from annotation.brush import rle_to_mask


@pytest.fixture(scope="module")
def seeded(labelstudio, tmp_path_factory):
    return seed_warehouse(labelstudio.workspace, tmp_path_factory.mktemp("incoming"),
                          names=("astronaut", "chelsea"), rollouts=2, singletons=("coffee", "rocket"))


@pytest.fixture(scope="module")
def pushed(labelstudio, seeded):
    s = push_batch(labelstudio.workspace, "push-main", batch_id=seeded["batch_id"], overlap=2,
                   gold=[seeded["sample_ids"][0]], conn=labelstudio.conn)
    return s


def _ls_tasks(labelstudio, pid):
    with LSHttp(labelstudio.conn) as http:
        return [t for page in http.iter_tasks(pid, all_fields=True) for t in page]


def test_push_imports_every_sample_once_with_prefilled_regions(labelstudio, seeded, pushed):
    ws = labelstudio.workspace
    assert pushed.imported == len(seeded["sample_ids"]) == 6
    assert pushed.errors == {} and pushed.without_regions == 0
    tasks = _ls_tasks(labelstudio, pushed.ls_project_id)
    assert sorted(t["data"]["sample_id"] for t in tasks) == seeded["sample_ids"]
    wh = Warehouse.open(ws)
    rows = {r["sample_id"]: r for r in wh.query_dicts(
        "SELECT * FROM tasks WHERE project_key = 'push-main'")}
    assert {t["data"]["sample_id"]: t["id"] for t in tasks} == {k: v["ls_task_id"] for k, v in rows.items()}
    for t in tasks:
        sid = t["data"]["sample_id"]
        region_set_id = rows[sid]["region_set_id"]
        assert t["data"]["region_set_id"] == region_set_id
        want = {r[0]: (r[1], masks.decode(r[2])) for r in wh.query(
            "SELECT idx, kind, rle FROM regions WHERE region_set_id = ?", [region_set_id])}
        (pred,) = t["predictions"]
        got = {}
        for res in pred["result"]:
            assert res["from_name"] == "region" and res["to_name"] == "edited" and res["type"] == "brushlabels"
            idx = int(res["id"][1:])
            m = rle_to_mask(res["value"]["rle"], res["original_height"], res["original_width"])
            got[idx] = (res["value"]["brushlabels"][0], m)
        assert got.keys() == want.keys()
        for idx in want:
            assert got[idx][0] == want[idx][0]
            assert np.array_equal(got[idx][1], want[idx][1]), f"region {idx} of {sid} differs"


def test_project_settings_gold_and_overlap(labelstudio, seeded, pushed):
    ls = labelstudio.client()
    p = ls.projects.get(id=pushed.ls_project_id)
    assert p.maximum_annotations == 2
    wh = Warehouse.open(labelstudio.workspace)
    gold = wh.query("SELECT sample_id FROM tasks WHERE project_key = 'push-main' AND is_gold")
    assert gold == [(seeded["sample_ids"][0],)]
    row = wh.query("SELECT ls_project_id, base_url, overlap FROM ls_projects WHERE project_key = 'push-main'")
    assert row == [(pushed.ls_project_id, labelstudio.base_url, 2)]


def test_images_are_served_to_label_studio(labelstudio, pushed):
    ws = labelstudio.workspace
    (t,) = _ls_tasks(labelstudio, pushed.ls_project_id)[:1]
    wh = Warehouse.open(ws)
    sha, uri = wh.query("SELECT i.sha256, i.uri FROM samples s JOIN images i ON i.sha256 = s.edited_sha256 "
                        "WHERE s.sample_id = ?", [t["data"]["sample_id"]])[0]
    r = httpx.get(labelstudio.base_url + t["data"]["edited_image"],
                  headers={"Authorization": f"Token {labelstudio.api_key}"}, follow_redirects=True)
    assert r.status_code == 200
    assert r.content == ws.absolute(uri).read_bytes()


def test_groups_come_before_singletons(labelstudio, pushed):
    wh = Warehouse.open(labelstudio.workspace)
    rows = wh.query("SELECT t.ls_task_id, t.priority, (SELECT count(*) FROM samples g WHERE g.group_id = s.group_id) "
                    "FROM tasks t JOIN samples s USING (sample_id) WHERE t.project_key = 'push-main' "
                    "ORDER BY t.ls_task_id")
    sizes = [r[2] for r in rows]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 1 and sizes[-1] == 1
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


def test_rerun_is_a_no_op(labelstudio, seeded, pushed):
    again = push_batch(labelstudio.workspace, "push-main", batch_id=seeded["batch_id"], overlap=2,
                       conn=labelstudio.conn)
    assert (again.imported, again.already_pushed, again.adopted) == (0, 6, 0)
    assert len(_ls_tasks(labelstudio, pushed.ls_project_id)) == 6


def test_rerun_adopts_tasks_the_warehouse_missed(labelstudio, seeded, pushed):
    # A crash between Label Studio's import and the warehouse write: tasks exist only in LS.
    wh = Warehouse.open(labelstudio.workspace)
    lost = seeded["sample_ids"][:3]
    with wh.write() as con:
        con.execute("DELETE FROM tasks WHERE project_key = 'push-main' AND sample_id IN (SELECT unnest(?))", [lost])
    again = push_batch(labelstudio.workspace, "push-main", batch_id=seeded["batch_id"], overlap=2,
                       conn=labelstudio.conn)
    assert (again.imported, again.adopted) == (0, 3)
    tasks = _ls_tasks(labelstudio, pushed.ls_project_id)
    assert len(tasks) == 6
    got = dict(wh.query("SELECT sample_id, ls_task_id FROM tasks WHERE project_key = 'push-main'"))
    assert got == {t["data"]["sample_id"]: t["id"] for t in tasks}


def test_bad_input_is_named(labelstudio, seeded):
    from annotation.push import PushError

    with pytest.raises(PushError, match="nope"):
        push_batch(labelstudio.workspace, "push-main", sample_ids=["nope"], conn=labelstudio.conn)
    with pytest.raises(PushError, match="no samples"):
        push_batch(labelstudio.workspace, "push-main", batch_id="no-such-batch", conn=labelstudio.conn)


def test_kill_server_mid_push_then_push_again(labelstudio, seeded):
    """SIGKILL the server after the first import request; restart; push again: every sample
    exactly once in Label Studio and the warehouse agrees."""
    ws, key = labelstudio.workspace, "push-crash"
    calls = []

    def kill_after_first(n):
        calls.append(n)
        if len(calls) == 1:
            server.kill(labelstudio.paths)

    with pytest.raises(LabelStudioError):
        push_batch(ws, key, batch_id=seeded["batch_id"], config=PushConfig(import_batch=2),
                   conn=labelstudio.conn, progress=kill_after_first)
    assert calls == [2]
    labelstudio.restart()
    s = push_batch(ws, key, batch_id=seeded["batch_id"], config=PushConfig(import_batch=2), conn=labelstudio.conn)
    assert s.already_pushed == 2 and s.imported + s.adopted == 4
    with LSHttp(labelstudio.conn) as http:
        in_ls = existing_task_ids(http, s.ls_project_id)
    assert sorted(in_ls) == seeded["sample_ids"]
    assert all(len(v) == 1 for v in in_ls.values()), "duplicate tasks"
    wh = Warehouse.open(ws)
    got = dict(wh.query("SELECT sample_id, ls_task_id FROM tasks WHERE project_key = ?", [key]))
    assert got == {k: v[0] for k, v in in_ls.items()}


def test_cli_push(labelstudio, seeded, capsys):
    import json

    from pipelines.cli import main as sfr

    home = str(labelstudio.workspace.home)
    assert sfr(["--home", home, "annotate", "push", "--project", "cli-proj", "--batch", seeded["batch_id"],
                "--overlap", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["imported"], out["requested"], out["errors"]) == (6, 6, {})
    assert sfr(["--home", home, "annotate", "push", "--project", "cli-proj", "--samples", "missing-id"]) == 2
    assert "missing-id" in capsys.readouterr().err
    assert sfr(["--home", home, "annotate", "sync", "--project", "cli-proj"]) == 0
    assert json.loads(capsys.readouterr().out)["tasks_seen"] == 6
