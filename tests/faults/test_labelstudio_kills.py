"""Label Studio killed (SIGKILL) at several points during push and during sync, then restarted
and the command rerun (issue 9): afterwards the warehouse equals Label Studio exactly — every
task once, every annotation once with its latest result, history kept, nothing duplicated."""
import json

import httpx
import pytest

from annotation import server
from annotation.client import LabelStudioError, LSHttp
from annotation.push import PushConfig, existing_task_ids, push_batch
from annotation.sync import SyncConfig, sync_project
from tests.fixtures.labelstudio import seed_warehouse
from warehouse.db import Warehouse

CRASH = (LabelStudioError, httpx.HTTPError, OSError)


@pytest.fixture(autouse=True)
def healthy_server(labelstudio):
    """Each case starts from a server that answers, whatever the case before left behind."""
    labelstudio.ensure_healthy()


@pytest.fixture(scope="module")
def seeded(labelstudio, tmp_path_factory):
    return seed_warehouse(labelstudio.workspace, tmp_path_factory.mktemp("incoming"),
                          names=("astronaut", "chelsea", "coffee", "rocket"), rollouts=3)


def _killer(labelstudio, at: int):
    calls = []

    def progress(n):
        calls.append(n)
        if len(calls) == at:
            server.kill(labelstudio.paths)
    return progress, calls


@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5])
def test_kill_during_push(labelstudio, seeded, kill_at):
    ws, key = labelstudio.workspace, f"kill-push-{kill_at}"
    progress, calls = _killer(labelstudio, kill_at)
    with pytest.raises(CRASH):
        push_batch(ws, key, batch_id=seeded["batch_id"], config=PushConfig(import_batch=2),
                   conn=labelstudio.conn, progress=progress)
    assert len(calls) == kill_at
    labelstudio.restart()
    s = push_batch(ws, key, batch_id=seeded["batch_id"], config=PushConfig(import_batch=2), conn=labelstudio.conn)
    with LSHttp(labelstudio.conn) as http:
        in_ls = existing_task_ids(http, s.ls_project_id)
    assert sorted(in_ls) == sorted(seeded["sample_ids"])          # none missing
    assert all(len(v) == 1 for v in in_ls.values())               # none duplicated
    got = dict(Warehouse.open(ws).query("SELECT sample_id, ls_task_id FROM tasks WHERE project_key = ?", [key]))
    assert got == {k: v[0] for k, v in in_ls.items()}             # warehouse == Label Studio


SYNC_KEY = "kill-sync"


@pytest.fixture(scope="module")
def annotated(labelstudio, seeded):
    """A pushed project with one annotation per task, synced once."""
    s = push_batch(labelstudio.workspace, SYNC_KEY, batch_id=seeded["batch_id"], conn=labelstudio.conn)
    with LSHttp(labelstudio.conn) as http:
        for page in http.iter_tasks(s.ls_project_id, all_fields=True):
            for task in page:
                http.post(f"/api/tasks/{task['id']}/annotations/", {"result": _result(task, 3)})
    sync_project(labelstudio.workspace, SYNC_KEY, conn=labelstudio.conn)
    return s.ls_project_id


def _result(task: dict, stars: int, overall: int | None = None) -> list[dict]:
    """The task's prefilled regions, each rated `stars`, plus whole-image ratings."""
    overall = stars if overall is None else overall
    regions = task["predictions"][0]["result"]
    out = [dict(r) for r in regions]
    for r in regions:
        for name in ("success", "preserve"):
            out.append({"id": r["id"], "from_name": name, "to_name": "edited", "type": "rating",
                        "value": {"rating": stars}})
    for rid, name, v in (("o1", "overall", overall), ("n1", "naturalness", stars), ("a1", "artifacts", stars)):
        out.append({"id": rid, "from_name": name, "to_name": "edited", "type": "rating", "value": {"rating": v}})
    return out


def _ls_annotations(labelstudio, pid) -> dict[int, list]:
    with LSHttp(labelstudio.conn) as http:
        return {a["id"]: a["result"] for page in http.iter_tasks(pid, all_fields=True)
                for t in page for a in t.get("annotations", [])}


def _canon(result) -> str:
    return json.dumps(result, sort_keys=True)


@pytest.mark.parametrize("kill_at", [1, 2, 3, 4, 5])
def test_kill_during_sync(labelstudio, annotated, kill_at):
    ws, pid = labelstudio.workspace, annotated
    wh = Warehouse.open(ws)
    versions_before = dict(wh.query("SELECT ls_annotation_id, max(version) FROM annotation_versions "
                                    "WHERE project_key = ? GROUP BY 1", [SYNC_KEY]))
    # Annotators change every annotation (a rating combination not used before): 12 changed tasks.
    stars, overall = {1: (1, 1), 2: (2, 2), 3: (4, 4), 4: (5, 5), 5: (1, 5)}[kill_at]
    with LSHttp(labelstudio.conn) as http:
        for page in http.iter_tasks(pid, all_fields=True):
            for task in page:
                for a in task["annotations"]:
                    http.request("PATCH", f"/api/annotations/{a['id']}/",
                                 json={"result": _result(task, stars, overall)})
    progress, calls = _killer(labelstudio, kill_at)
    with pytest.raises(CRASH):
        sync_project(ws, SYNC_KEY, conn=labelstudio.conn, config=SyncConfig(page_size=2, list_page_size=2), progress=progress)
    assert len(calls) == kill_at
    labelstudio.restart()
    sync_project(ws, SYNC_KEY, conn=labelstudio.conn, config=SyncConfig(page_size=2, list_page_size=2))
    in_ls = _ls_annotations(labelstudio, pid)
    current = {r[0]: r[1] for r in wh.query(
        "SELECT a.ls_annotation_id, v.result FROM annotations a JOIN annotation_versions v "
        "ON v.project_key = a.project_key AND v.ls_annotation_id = a.ls_annotation_id AND v.version = a.version "
        "WHERE a.project_key = ? AND NOT a.is_deleted", [SYNC_KEY])}
    assert set(current) == set(in_ls)                                   # none lost, none extra
    assert all(_canon(json.loads(current[k])) == _canon(in_ls[k]) for k in in_ls)
    # History: every annotation gained exactly one version this round (no duplicate versions
    # from the interrupted run), and earlier versions are still there.
    after = dict(wh.query("SELECT ls_annotation_id, max(version) FROM annotation_versions "
                          "WHERE project_key = ? GROUP BY 1", [SYNC_KEY]))
    assert {k: after[k] - versions_before[k] for k in versions_before} == {k: 1 for k in versions_before}
    assert wh.query("SELECT count(*) FROM (SELECT ls_annotation_id, result FROM annotation_versions "
                    "WHERE project_key = ? GROUP BY 1, 2 HAVING count(*) > 1)", [SYNC_KEY]) == [(0,)]
