"""Push and sync throughput against a real local Label Studio.

1. Push: tasks/s with prefilled brush predictions, batched (one request and one warehouse
   transaction per `import_batch` tasks) vs one task per request. Target: >= 20x.
2. Sync: in a project of N annotated tasks, time to pull 10 changed annotations with the
   incremental sync vs a full export (snapshot with annotations, created, polled, downloaded).
   Target: >= 20x.

Run: .venv/bin/python benchmarks/bench_push_sync.py [--tasks 5000] [--one-by-one 150]
Writes benchmarks/results/push_sync.md. Uses the cached migrated Label Studio template
(tests/fixtures/labelstudio.py) and a temporary workspace.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotation import server  # noqa: E402
from annotation.client import LSHttp  # noqa: E402
from annotation.push import PushConfig, brush_results, push_batch  # noqa: E402
from annotation.sync import sync_project  # noqa: E402
from tests.fixtures.core import photo  # noqa: E402
from tests.fixtures.labelstudio import start_copy  # noqa: E402
from warehouse import masks  # noqa: E402
from warehouse.db import Warehouse  # noqa: E402
from warehouse.ingest import ingest_path  # noqa: E402

SIZE = 64
NOTE = ("Notes: the incremental sync lists tasks whose `updated_at` (touched by every annotation save or "
        "delete) is after its cursor, with narrowed fields, fetches full annotations for those tasks only, and "
        "writes one warehouse transaction; it also checks the project's task count for deleted tasks. The time "
        "includes all its HTTP round trips and DuckDB work.")


def make_batch(folder: Path, n: int, tag: str) -> Path:
    """n samples in groups of 4 over 8 distinct photos/edits (images are shared; sample ids,
    group ids and instructions are distinct)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    for k, name in enumerate(names):
        src = photo(name, SIZE)
        Image.fromarray(src).save(folder / f"{name}.png")
        for j in range(2):
            ed = src.copy()
            ed[8 + 8 * j:40, 10:40, j] = 255
            Image.fromarray(ed).save(folder / f"{name}_{j}.png")
    with open(folder / "manifest.jsonl", "w") as f:
        for i in range(n):
            name = names[(i // 4) % 4]
            f.write(json.dumps({"sample_id": f"{tag}-{i:05d}", "group_id": f"{tag}-g{i // 4:05d}",
                                "source": f"{name}.png", "edited": f"{name}_{i % 2}.png",
                                "instruction": f"recolor the box ({tag} {i // 4})"}) + "\n")
    return folder / "manifest.jsonl"


def add_regions(wh: Warehouse, batch_id: str) -> None:
    """Fixed boxes per group, stored through the region store (as the PostgreSQL fault test does)."""
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
        regions = [Region(kind, m, masks.bbox_xyxy(m), int(m.sum()), "source", "bench", cfg.config_hash())
                   for kind, m in parts]
        save_region_set(wh, gid, sha, (SIZE, SIZE), regions, cfg)


def full_result(pred: list[dict], stars: int) -> list[dict]:
    out = list(pred)
    for r in pred:
        out += [{"id": r["id"], "from_name": "preserve", "to_name": "edited", "type": "rating", "value": {"rating": stars}},
                {"id": r["id"], "from_name": "success", "to_name": "edited", "type": "rating", "value": {"rating": stars}}]
    for rid, name in (("o", "overall"), ("n", "naturalness"), ("a", "artifacts")):
        out.append({"id": rid, "from_name": name, "to_name": "edited", "type": "rating", "value": {"rating": stars}})
    return out


def full_export(ls, pid: int) -> tuple[float, int]:
    """The baseline: a snapshot export of the whole project with annotations, downloaded."""
    t = time.perf_counter()
    ex = ls.projects.exports.create(id=pid, title="bench", serialization_options={"predictions": {"only_id": True}})
    while True:
        st = ls.projects.exports.get(id=pid, export_pk=ex.id)
        if st.status == "completed":
            break
        if st.status == "failed":
            raise RuntimeError("export failed")
        time.sleep(0.2)
    data = b"".join(ls.projects.exports.download(id=pid, export_pk=ex.id, export_type="JSON"))
    tasks = json.loads(data)
    return time.perf_counter() - t, sum(len(t["annotations"]) for t in tasks)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=5000, help="annotated tasks in the sync project")
    ap.add_argument("--one-by-one", type=int, default=150, help="tasks pushed one per request (baseline)")
    ap.add_argument("--batched", type=int, default=1000, help="tasks pushed batched")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/push_sync.md"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sfr-bench-ls-"))
    h = start_copy(tmp / "home")
    ws = h.workspace
    lines = []
    try:
        wh = Warehouse.open(ws)
        # ---------------------------------------------------------------- push
        b1 = ingest_path(ws, make_batch(tmp / "in1", args.one_by_one, "one")).batch_id
        b2 = ingest_path(ws, make_batch(tmp / "in2", args.batched, "bat")).batch_id
        add_regions(wh, b1)
        add_regions(wh, b2)
        t = time.perf_counter()
        s1 = push_batch(ws, "bench-one", batch_id=b1, conn=h.conn, one_by_one=True)
        t_one = time.perf_counter() - t
        t = time.perf_counter()
        s2 = push_batch(ws, "bench-batched", batch_id=b2, conn=h.conn, config=PushConfig(import_batch=500))
        t_bat = time.perf_counter() - t
        assert s1.imported == args.one_by_one and s2.imported == args.batched
        r_one, r_bat = s1.imported / t_one, s2.imported / t_bat
        print(f"push: one-by-one {r_one:.1f} tasks/s, batched {r_bat:.1f} tasks/s, {r_bat / r_one:.1f}x", flush=True)

        # ---------------------------------------------------------------- sync
        b3 = ingest_path(ws, make_batch(tmp / "in3", args.tasks, "syn")).batch_id
        add_regions(wh, b3)
        # Set-up: create the 5,000 tasks already annotated (tasks imported with an annotation
        # each, then adopted by push_batch); the sync does not care how annotations were made.
        from annotation.push import PushConfig as _PC, _region_sets, _select_samples, build_task, ensure_project

        pid = ensure_project(ws, h.conn, "bench-sync", _PC())
        samples = _select_samples(wh, b3, None)
        sets = _region_sets(wh, sorted({s["group_id"] for s in samples}), None)
        t = time.perf_counter()
        with LSHttp(h.conn) as http:
            for i in range(0, len(samples), 500):
                body = []
                for smp in samples[i:i + 500]:
                    task = build_task(ws, smp, sets.get(smp["group_id"]), False)
                    task["annotations"] = [{"result": full_result(task["predictions"][0]["result"], 4)}]
                    body.append(task)
                http.post(f"/api/projects/{pid}/import", body)
        t_annotate = time.perf_counter() - t
        s3 = push_batch(ws, "bench-sync", batch_id=b3, conn=h.conn)
        assert s3.adopted == args.tasks and s3.imported == 0, s3
        ls = h.client()
        pred = build_task(ws, samples[0], sets.get(samples[0]["group_id"]), False)["predictions"][0]["result"]
        t = time.perf_counter()
        first = sync_project(ws, "bench-sync", conn=h.conn)
        t_first = time.perf_counter() - t
        assert first.created == args.tasks, first
        # The sync re-reads a 5 s window behind its cursor (commits racing the previous sync); make
        # sure the set-up import is outside it, as it is when annotations trickle in.
        time.sleep(6.0)
        # 10 annotators change their minds.
        anns = wh.query("SELECT ls_annotation_id FROM annotations WHERE project_key = 'bench-sync' ORDER BY 1 LIMIT 10")
        for (aid,) in anns:
            ls.annotations.update(id=aid, result=full_result(pred, 2))
        time.sleep(1.0)
        t = time.perf_counter()
        inc = sync_project(ws, "bench-sync", conn=h.conn)
        t_inc = time.perf_counter() - t
        assert inc.updated == 10 and inc.created == 0, inc
        t_exp, n_exp = full_export(ls, pid)
        assert n_exp == args.tasks
        print(f"sync: incremental {t_inc:.2f} s for 10 changes, full export {t_exp:.2f} s, {t_exp / t_inc:.1f}x", flush=True)
    finally:
        server.stop(h.paths)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Push and sync throughput (real Label Studio 1.23.2, SQLite)", "",
        f"Command: `.venv/bin/python benchmarks/bench_push_sync.py --tasks {args.tasks} --one-by-one "
        f"{args.one_by_one} --batched {args.batched}`  ",
        f"Date: {date}. Machine: {platform.machine()}, 2 CPU cores shared with other jobs "
        f"(load varies), Python {platform.python_version()}. Images {SIZE}x{SIZE}, 3 brush regions per task.", "",
        "## Push (tasks with prefilled brush predictions; includes image linking and the warehouse writes)", "",
        "| mode | tasks | seconds | tasks/s |", "|---|---|---|---|",
        f"| one task per request | {s1.imported} | {t_one:.2f} | {r_one:.1f} |",
        f"| batched (500 per request) | {s2.imported} | {t_bat:.2f} | {r_bat:.1f} |",
        "",
        f"**Batched vs one by one: {r_bat / r_one:.1f}x** (target >= 20x).", "",
        f"## Sync: 10 changed annotations in a project of {args.tasks} annotated tasks", "",
        "| method | seconds |", "|---|---|",
        f"| incremental sync (`sfr annotate sync`) | {t_inc:.3f} |",
        f"| full export (snapshot create + poll + download, JSON) | {t_exp:.3f} |", "",
        f"**Incremental vs full export: {t_exp / t_inc:.1f}x** (target >= 20x).", "",
        f"Set-up (not compared): importing {args.tasks} annotated tasks {t_annotate:.1f} s; first full sync "
        f"of {first.created} annotations into the warehouse {t_first:.1f} s.", "",
        NOTE, "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
