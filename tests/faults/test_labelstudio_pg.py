"""Faults on Label Studio backed by PostgreSQL (one server for the module, on a clone of the
session's migrated database: tests/fixtures/postgres.py).

- test_labelstudio_kills.py's SIGKILL cases, at one kill point each for push and sync;
- PostgreSQL itself stopped in the middle of a sync of a few hundred annotated tasks: the sync
  fails with an error that names Label Studio's failure, and after PostgreSQL is started again
  the same sync resumes and leaves the warehouse equal to Label Studio."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation import postgres
from annotation.client import LabelStudioError, LSHttp
from annotation.push import PushConfig, _region_sets, _select_samples, build_task, ensure_project, push_batch
from annotation.sync import SyncConfig, sync_project
from tests.faults import test_labelstudio_kills as kills
from tests.faults.test_labelstudio_kills import annotated, healthy_server, seeded  # noqa: F401 - module fixtures
from tests.fixtures.core import photo
from warehouse import masks
from warehouse.db import Warehouse
from warehouse.ingest import ingest_path

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]

SIZE = 64
N_TASKS = 240


@pytest.fixture(scope="module")
def labelstudio(labelstudio_pg):
    return labelstudio_pg


def test_kill_during_push(labelstudio, seeded):
    kills.test_kill_during_push(labelstudio, seeded, kill_at=2)


def test_kill_during_sync(labelstudio, annotated):
    kills.test_kill_during_sync(labelstudio, annotated, kill_at=2)


# ----------------------------------------------------------------------------- PostgreSQL stopped
def _many_samples(folder: Path, n: int) -> Path:
    """n samples (groups of 4) over two photos and four edits: images are shared, ids distinct."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in ("astronaut", "coffee"):
        src = photo(name, SIZE)
        Image.fromarray(src).save(folder / f"{name}.png")
        for j in range(2):
            ed = src.copy()
            ed[8 + 8 * j:40, 10:40, j] = 255
            Image.fromarray(ed).save(folder / f"{name}_{j}.png")
    for i in range(n):
        name = ("astronaut", "coffee")[(i // 4) % 2]
        rows.append({"sample_id": f"pg-{i:04d}", "group_id": f"pg-g{i // 4:04d}", "source": f"{name}.png",
                     "edited": f"{name}_{i % 2}.png", "instruction": f"recolor the box ({i // 4})"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"


def _add_regions(wh: Warehouse, batch_id: str) -> None:
    """Fixed boxes per group, stored through the region store (sfreward.regions.store)."""
    from sfreward.regions.base import ProposerConfig, Region
    from sfreward.regions.store import save_region_set

    edit = np.zeros((SIZE, SIZE), bool)
    edit[8:40, 10:40] = True
    context = np.zeros((SIZE, SIZE), bool)
    context[48:, :32] = True
    parts = [("edit", edit), ("context", context), ("background", ~(edit | context))]
    cfg = ProposerConfig()   # the classical proposer's config: push picks region sets by group
    groups = wh.query("SELECT DISTINCT group_id, source_sha256 FROM samples WHERE batch_id = ?", [batch_id])
    for gid, sha in groups:
        regions = [Region(kind, m, masks.bbox_xyxy(m), int(m.sum()), "source", "test", cfg.config_hash())
                   for kind, m in parts]
        save_region_set(wh, gid, sha, (SIZE, SIZE), regions, cfg)


def _full_result(pred: list[dict], stars: int) -> list[dict]:
    out = list(pred)
    for r in pred:
        out += [{"id": r["id"], "from_name": name, "to_name": "edited", "type": "rating", "value": {"rating": stars}}
                for name in ("success", "preserve")]
    return out + [{"id": f"i{k}", "from_name": name, "to_name": "edited", "type": "rating", "value": {"rating": stars}}
                  for k, name in enumerate(("overall", "naturalness", "artifacts"))]


@pytest.fixture(scope="module")
def big_project(labelstudio, tmp_path_factory):
    """N_TASKS tasks, each imported with one annotation (one request per 100), adopted by push."""
    ws, key = labelstudio.workspace, "pg-big"
    batch_id = ingest_path(ws, _many_samples(tmp_path_factory.mktemp("big"), N_TASKS)).batch_id
    wh = Warehouse.open(ws)
    _add_regions(wh, batch_id)
    pid = ensure_project(ws, labelstudio.conn, key, PushConfig())
    samples = _select_samples(wh, batch_id, None)
    sets = _region_sets(wh, sorted({s["group_id"] for s in samples}), None)
    with LSHttp(labelstudio.conn) as http:
        for i in range(0, len(samples), 100):
            body = []
            for k, smp in enumerate(samples[i:i + 100]):
                task = build_task(ws, smp, sets.get(smp["group_id"]), False)
                task["annotations"] = [{"result": _full_result(task["predictions"][0]["result"], 1 + (i + k) % 5)}]
                body.append(task)
            http.post(f"/api/projects/{pid}/import", body)
    s = push_batch(ws, key, batch_id=batch_id, conn=labelstudio.conn)
    assert s.adopted == N_TASKS and s.imported == 0, s
    return key, pid


def _warehouse_current(ws, key) -> dict[int, str]:
    return {r[0]: json.dumps(json.loads(r[1]), sort_keys=True) for r in Warehouse.open(ws).query(
        "SELECT a.ls_annotation_id, v.result FROM annotations a JOIN annotation_versions v "
        "USING (project_key, ls_annotation_id, version) WHERE a.project_key = ? AND NOT a.is_deleted", [key])}


def test_postgres_stopped_mid_sync_then_sync_resumes(labelstudio, big_project):
    ws, (key, pid) = labelstudio.workspace, big_project
    cluster = postgres.Cluster(Path(postgres.read_choice(ws.labelstudio)["cluster"]))
    calls = []

    def stop_postgres_after_two_pages(n):
        calls.append(n)
        if len(calls) == 2:
            postgres.stop(cluster)

    cfg = SyncConfig(page_size=40, list_page_size=80)
    try:
        with pytest.raises(LabelStudioError) as err:
            sync_project(ws, key, conn=labelstudio.conn, config=cfg, progress=stop_postgres_after_two_pages)
    finally:
        postgres.start(cluster, durable=False)  # as the session's cluster was started
    assert len(calls) == 2
    # the error says what failed and where to look; no secret in it
    msg = str(err.value)
    assert "HTTP 500" in msg and "Label Studio" in msg and "log" in msg, msg
    assert labelstudio.conn.api_key not in msg
    synced = len(_warehouse_current(ws, key))
    assert 0 < synced < N_TASKS  # the pages before the stop are kept

    labelstudio.ensure_healthy()
    s = sync_project(ws, key, conn=labelstudio.conn, config=cfg)
    assert s.created == N_TASKS - synced
    with LSHttp(labelstudio.conn) as http:
        in_ls = {a["id"]: json.dumps(a["result"], sort_keys=True)
                 for page in http.iter_tasks(pid, all_fields=True) for t in page for a in t["annotations"]}
    assert len(in_ls) == N_TASKS
    assert _warehouse_current(ws, key) == in_ls  # warehouse == Label Studio, each annotation once
    assert Warehouse.open(ws).query("SELECT count(*), count(DISTINCT ls_annotation_id) FROM annotation_versions "
                                    "WHERE project_key = ?", [key]) == [(N_TASKS, N_TASKS)]
