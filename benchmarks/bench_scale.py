"""The platform at full size on its production set-up: Label Studio on PostgreSQL.

    generate -> ingest -> proposals -> push -> annotate (3 simulated annotators, concurrently,
    through the API: overlap 3) -> sync (first, full) -> sync of 1,000 changed annotations
    (incremental) -> curation (aggregate + agreement) -> dataset build -> export (HF parquet)

`--samples N` synthetic samples in groups of 8 (N / 8 procedural source scenes, one instruction
each: every group has its own distinct source), at a fixed image size (`--image-size`, 128 px).

Every stage runs in its own child process (its CPU time and peak RSS come from wait4), and the
CPU time of the Label Studio and PostgreSQL server process trees is read from /proc before and
after. Per stage: wall seconds, samples/s, CPU seconds per sample (bench + Label Studio +
PostgreSQL), peak RSS, and the Label Studio database, warehouse and image store sizes after it.
The child imports its stage's modules before it starts the stage, and reports the CPU spent so
far (interpreter start-up and imports: a fixed cost of running a stage as a fresh process, 0.2 s
to 3.5 s); per-sample CPU is given with and without it, and the flatness target (1,400 vs 14,000
samples) uses the per-sample CPU without it, so that a fixed cost does not look like a per-sample
one at small sizes.

Resumable: `<workspace>/bench_state.json` records finished stages; a rerun with the same
workspace skips them (every stage is itself idempotent, so an interrupted one is simply rerun).

Run:  .venv/bin/python benchmarks/bench_scale.py --samples 14000 --workspace /tmp/sfr-scale-14000
      .venv/bin/python benchmarks/bench_scale.py --report   # results table from the state files
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from warehouse.workspace import Workspace  # noqa: E402

STAGES = ["generate", "ingest", "proposals", "labelstudio", "push", "annotate", "sync", "sync_1000", "curation", "dataset",
          "export"]
PROJECT = "scale"
BOTS = ["sim-careful", "sim-average", "sim-harsh"]   # three annotators, one process each
STATE = "bench_state.json"
N_CHANGED = 1000
# What each stage imports (lazily, inside its function): the child imports these before it takes
# the start-up CPU reading, so the stage's own CPU excludes them.
STAGE_IMPORTS = {
    "generate": ["sfreward.synthetic"],
    "ingest": ["warehouse.ingest"],
    "proposals": ["sfreward.regions", "warehouse.ingest"],
    "labelstudio": ["annotation.client", "annotation.server"],
    "push": ["annotation.push", "annotation.client", "annotation.server", "warehouse.ingest"],
    "annotate": ["annotation.simulate", "annotation.client", "annotation.push", "annotation.server"],
    "sync": ["annotation.sync", "annotation.client", "annotation.server"],
    "sync_1000": ["annotation.sync", "annotation.client", "annotation.server", "warehouse.db"],
    "curation": ["warehouse.curation", "warehouse.curation.aggregate", "warehouse.curation.agreement"],
    "dataset": ["warehouse.curation"],
    "export": ["warehouse.curation", "warehouse.curation.dataset", "warehouse.curation.exports", "warehouse.datasets"],
}


@dataclass
class ScaleConfig:
    samples: int = 1400
    image_size: int = 128
    rollouts: int = 8
    overlap: int = 3
    seed: int = 0

    @property
    def groups(self) -> int:
        return self.samples // self.rollouts


# ----------------------------------------------------------------------------- the stages' work
def _ws(home: str) -> Workspace:
    return Workspace.open(home)


def _batch_id(ws: Workspace) -> str:
    from warehouse.ingest import batch_id_for
    return batch_id_for((ws.incoming / "scale" / "manifest.jsonl").resolve())


def _conn(ws: Workspace):
    from annotation.client import connection
    from annotation.server import ServerPaths, up

    up(ServerPaths.for_workspace(ws), db="postgres", timeout_s=600)  # no-op when it runs
    return connection(ws)


def stage_generate(ws: Workspace, cfg: ScaleConfig) -> dict:
    from sfreward.synthetic import SynthConfig, generate

    synth = SynthConfig(n_sources=cfg.groups, groups_per_source=1, rollouts=cfg.rollouts,
                        image_size=cfg.image_size, seed=cfg.seed, extra="procedural")
    generate(ws.incoming / "scale", synth, progress=True)
    return {"groups": cfg.groups}


def stage_ingest(ws: Workspace, cfg: ScaleConfig) -> dict:
    from warehouse.ingest import ingest_path
    s = ingest_path(ws, ws.incoming / "scale" / "manifest.jsonl")
    return {"ingested": s.ingested, "duplicates": s.duplicates, "quarantined": s.quarantined}


def stage_proposals(ws: Workspace, cfg: ScaleConfig) -> dict:
    from sfreward.regions import ProposerConfig, propose_for_batch
    s = propose_for_batch(ws, _batch_id(ws), ProposerConfig(device="cpu"))
    return {k: s[k] for k in ("n_groups", "n_proposed", "n_existing", "n_failed", "n_regions")}


def stage_labelstudio(ws: Workspace, cfg: ScaleConfig) -> dict:
    """Label Studio on the workspace's PostgreSQL (first time: initdb, migrations). Kept out of push."""
    conn = _conn(ws)
    return {"base_url": conn.base_url}


def stage_push(ws: Workspace, cfg: ScaleConfig) -> dict:
    from annotation.push import PushConfig, push_batch
    s = push_batch(ws, PROJECT, batch_id=_batch_id(ws), conn=_conn(ws),
                   config=PushConfig(overlap=cfg.overlap, import_batch=500), progress=_Every("pushed", 1000))
    return {"imported": s.imported, "already_pushed": s.already_pushed, "adopted": s.adopted,
            "errors": len(s.errors)}


class _Every:
    """progress callback: a line every `n` items (long stages of a run spanning sittings)."""

    def __init__(self, label: str, n: int):
        self.label, self.n, self.done, self.t0 = label, n, 0, time.perf_counter()

    def __call__(self, k: int = 1) -> None:
        self.done += k
        if self.done % self.n < k:
            print(f"{time.strftime('%H:%M:%S')}   {self.label}: {self.done} "
                  f"({self.done / (time.perf_counter() - self.t0):.1f}/s)", flush=True)


class _Deadline(Exception):
    pass


def _deadline(ws: Workspace) -> float | None:
    """Unix time in `<workspace>/annotate_until` (written by --annotate-until), if any."""
    f = ws.home / "annotate_until"
    return float(f.read_text()) if f.exists() else None


def _one_bot(home: str, name: str) -> dict:
    from annotation.simulate import default_bots, run_bots
    ws = _ws(home)
    bot = [b for b in default_bots() if b.name == name]
    every = _Every(f"{name} tasks", 500)
    until = _deadline(ws)

    def progress(k: int) -> None:
        every(k)
        if until is not None and time.time() > until:
            raise _Deadline()
    try:
        s = run_bots(ws, PROJECT, ws.incoming / "scale" / "ground_truth.jsonl", bots=bot, max_per_task=1,
                     progress=progress)
    except _Deadline:
        return {"stopped_at_deadline": True, "tasks_offered": every.done}
    return {"created": s.created[name], "skipped": s.skipped[name], "already_done": s.already_done,
            "errors": len(s.errors)}


def stage_annotate(ws: Workspace, cfg: ScaleConfig) -> dict:
    """Three annotators at once, each its own process and HTTP session (overlap 3)."""
    from concurrent.futures import ProcessPoolExecutor

    _conn(ws)
    from annotation.simulate import default_bots, ensure_users, register_annotators
    from annotation.client import LSHttp, connection
    bots = [b for b in default_bots() if b.name in BOTS][:cfg.overlap]
    with LSHttp(connection(ws)) as http:  # users first: concurrent creation would race
        register_annotators(ws, connection(ws).base_url, bots, ensure_users(http, bots))
        before = _annotations_in_project(http, ws)
    with ProcessPoolExecutor(len(bots)) as pool:
        futs = {b.name: pool.submit(_one_bot, str(ws.home), b.name) for b in bots}
        out: dict = {name: f.result() for name, f in futs.items()}
    with LSHttp(connection(ws)) as http:  # what Label Studio holds now (all sittings together)
        n_ann = _annotations_in_project(http, ws)
    out["annotations_in_project"] = n_ann
    out["partial"] = any(isinstance(v, dict) and v.get("stopped_at_deadline") for v in out.values())
    # Samples' worth of annotation work done in THIS sitting: per-sample CPU divides this
    # sitting's CPU by it (a continued run's earlier sittings are in their own records).
    out["n"] = (n_ann - before) / cfg.overlap
    return out


def _annotations_in_project(http, ws: Workspace) -> int:
    """Submitted plus skipped annotations in the bench project, as Label Studio counts them."""
    from annotation.push import project_id
    p = http.get(f"/api/projects/{project_id(ws, PROJECT)}")
    return int(p.get("total_annotations_number") or 0) + int(p.get("skipped_annotations_number") or 0)


def stage_sync(ws: Workspace, cfg: ScaleConfig) -> dict:
    from annotation.sync import sync_project
    s = sync_project(ws, PROJECT, conn=_conn(ws), progress=_Every("synced tasks", 1000))
    out = {k: v for k, v in asdict(s).items() if isinstance(v, int)}
    return {**out, "n": s.created / cfg.overlap}


def change_annotations(ws: Workspace, n: int) -> int:
    """n annotators change their minds: every rating of n annotations moves by one star (set-up
    of the sync_1000 stage; not timed as part of the sync)."""
    from annotation.client import LSHttp
    from warehouse.db import Warehouse

    rows = Warehouse.open(ws).query(
        "SELECT a.ls_annotation_id, v.result FROM annotations a JOIN annotation_versions v "
        "USING (project_key, ls_annotation_id, version) WHERE a.project_key = ? AND NOT a.was_cancelled "
        "AND NOT a.is_deleted ORDER BY 1 LIMIT ?", [PROJECT, n])
    done = 0
    with LSHttp(_conn(ws)) as http:
        for aid, text in rows:
            result = json.loads(text)
            for r in result:
                if r.get("type") == "rating":
                    v = int(r["value"]["rating"])
                    r["value"]["rating"] = v - 1 if v > 1 else v + 1
            http.request("PATCH", f"/api/annotations/{int(aid)}/", json={"result": result})
            done += 1
    return done


def stage_sync_1000(ws: Workspace, cfg: ScaleConfig) -> dict:
    """Times only the incremental sync (the changes are made first; see change_annotations)."""
    from annotation.sync import sync_project
    conn = _conn(ws)
    n = change_annotations(ws, min(N_CHANGED, cfg.samples))
    time.sleep(1.0)
    t = time.perf_counter()
    s = sync_project(ws, PROJECT, conn=conn)
    out = {k: v for k, v in asdict(s).items() if isinstance(v, int)}
    return {"changed": n, "sync_seconds": time.perf_counter() - t, **out}


def stage_curation(ws: Workspace, cfg: ScaleConfig) -> dict:
    from warehouse.curation import CurationConfig
    from warehouse.curation.aggregate import aggregate
    from warehouse.curation.agreement import agreement_report
    counts = aggregate(ws)
    report = agreement_report(ws, CurationConfig())
    return {"samples": counts["samples"], "regions": counts["regions"], "report_id": report.report_id,
            "n": counts["samples"]}


def stage_dataset(ws: Workspace, cfg: ScaleConfig) -> dict:
    from warehouse.curation import CurationConfig, build_dataset
    v = build_dataset(ws, CurationConfig())
    return {"dataset_id": v.dataset_id, "rows": v.n_rows, "regions": v.n_regions, "splits": v.split_counts,
            "n": v.n_rows}


def stage_export(ws: Workspace, cfg: ScaleConfig) -> dict:
    from warehouse.curation import export_hf
    from warehouse.curation.dataset import get_version
    from warehouse.datasets import current_dataset_id
    dataset_id = current_dataset_id(ws)
    path = export_hf(ws, dataset_id)
    return {"bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
            "n": get_version(ws, dataset_id).n_rows}


# ----------------------------------------------------------------------------- measurement
def _proc_cpu(pids: set[int]) -> float:
    """utime + stime + reaped children's, seconds, over these processes (gone ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total / tick


def _tree(root_pid: int | None) -> set[int]:
    import psutil
    if not root_pid or root_pid <= 0:
        return set()
    try:
        p = psutil.Process(root_pid)
        return {root_pid} | {c.pid for c in p.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _servers(ws: Workspace) -> dict[str, int | None]:
    """Root pids of the Label Studio and PostgreSQL servers of this workspace (None when down)."""
    from annotation import postgres
    from annotation.server import ServerPaths, status
    ls = status(ServerPaths.for_workspace(ws))
    pg_pid = None
    pidfile = postgres.Cluster.for_home(ws.home).data / "postmaster.pid"
    if pidfile.exists():
        try:
            pg_pid = int(pidfile.read_text().split()[0])
        except (ValueError, IndexError, FileNotFoundError):  # being written
            pg_pid = None
        if pg_pid is not None and pg_pid <= 0:  # a standalone backend (initdb), not the server
            pg_pid = None
    return {"labelstudio": ls["pid"] if ls["running"] else None, "postgres": pg_pid}


def _server_cpu(ws: Workspace) -> dict[str, float]:
    return {k: _proc_cpu(_tree(pid)) for k, pid in _servers(ws).items()}


def _rss_mb(pids: set[int]) -> float:
    import psutil
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def sizes(ws: Workspace) -> dict[str, float]:
    """MB on disk: warehouse (DuckDB file + WAL), image store, Label Studio database, datasets."""
    def du(p: Path) -> float:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20 if p.exists() else 0.0

    wh = sum(p.stat().st_size for p in ws.warehouse_path.parent.glob(ws.warehouse_path.name + "*")
             if p.is_file()) / 2**20
    out = {"warehouse_mb": wh, "images_mb": du(ws.images), "datasets_mb": du(ws.datasets), "ls_db_mb": 0.0}
    from annotation import postgres
    choice = postgres.read_choice(ws.labelstudio)
    if choice and postgres.status(postgres.Cluster(Path(choice["cluster"]))).get("running"):
        with postgres._connect(postgres.Cluster(Path(choice["cluster"]))) as con:
            cur = con.execute("SELECT pg_database_size(%s)", [choice["name"]])
            out["ls_db_mb"] = cur.fetchone()[0] / 2**20
    return out


def run_stage(ws: Workspace, cfg: ScaleConfig, name: str, log) -> dict:
    """The stage in a child process; wall, CPU (child + servers), peak RSS, sizes."""
    before = _server_cpu(ws)
    peak = {"labelstudio": 0.0, "postgres": 0.0}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            for k, pid in _servers(ws).items():
                peak[k] = max(peak[k], _rss_mb(_tree(pid)))
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out_file = ws.home / f"bench_stage_{name}.json"
    out_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--workspace", str(ws.home),
           "--samples", str(cfg.samples), "--image-size", str(cfg.image_size)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    stop.set()
    th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"stage {name} failed (exit {proc.returncode}); rerun the same command to resume")
    after = _server_cpu(ws)
    server_cpu = {k: max(0.0, after[k] - before[k]) for k in after}
    result = json.loads(out_file.read_text())
    cpu = ru.ru_utime + ru.ru_stime + sum(server_cpu.values())
    startup = float(result.get("startup_cpu_s", 0.0))
    n = float(result.get("n") or cfg.samples)   # samples this stage worked on (annotate/sync: may be partial)
    rec = {"n": n, "wall_s": wall, "bench_cpu_s": ru.ru_utime + ru.ru_stime, "server_cpu_s": server_cpu,
           "cpu_s": cpu, "cpu_ms_per_sample": 1000 * cpu / n, "startup_cpu_s": startup,
           "work_cpu_ms_per_sample": 1000 * (cpu - startup) / n,
           "samples_per_s": n / wall, "peak_rss_mb": ru.ru_maxrss / 1024,
           "server_peak_rss_mb": peak, "sizes": sizes(ws), "result": result,
           "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if name == "sync_1000":  # the target is the sync alone, not the set-up edits
        rec["target_s"] = result["sync_seconds"]
    log(f"{name}: {wall:.1f} s wall, {rec['cpu_ms_per_sample']:.2f} ms CPU/sample, "
        f"peak {rec['peak_rss_mb']:.0f} MB, {json.dumps(result)[:300]}")
    return rec


def _cpu_so_far() -> float:
    """CPU seconds of this process and its reaped children so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def child(name: str, home: str, cfg: ScaleConfig) -> None:
    for module in STAGE_IMPORTS.get(name, []):
        importlib.import_module(module)
    ws = _ws(home)
    startup = _cpu_so_far()
    result = globals()[f"stage_{name}"](ws, cfg)
    result["startup_cpu_s"] = startup
    (ws.home / f"bench_stage_{name}.json").write_text(json.dumps(result, default=str))


def run(home: Path, cfg: ScaleConfig, only: list[str] | None = None) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    for p in [home, *home.parents]:  # the PostgreSQL server user must pass through (when root)
        if p == Path("/"):
            break
        if p.stat().st_uid == os.getuid():
            os.chmod(p, p.stat().st_mode | 0o011)
    ws = _ws(str(home))
    state_path = ws.home / STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {"config": asdict(cfg), "stages": {}}
    if state["config"] != asdict(cfg):
        raise SystemExit(f"{state_path} was written for {state['config']}, not {asdict(cfg)}: use another workspace")
    logf = open(ws.home / "bench_progress.log", "a")

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} [{cfg.samples}] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()
    for name in STAGES:
        if only and name not in only:
            continue
        if name in state["stages"]:
            log(f"{name}: done earlier, skipped")
            continue
        log(f"{name}: start")
        state["stages"][name] = run_stage(ws, cfg, name, log)
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, default=str))
        tmp.replace(state_path)
    return state


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1400)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--workspace", help="bench workspace (default /tmp/sfr-scale/<samples>)")
    ap.add_argument("--stages", nargs="*", help="only these stages (default: all, in order)")
    ap.add_argument("--annotate-until", help="UTC HH:MM: the annotators stop then (stage recorded as partial; "
                    "continue later with --redo-from annotate)")
    ap.add_argument("--redo-from", choices=STAGES, help="forget this stage and the later ones, then run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--stop", action="store_true", help="stop the workspace's Label Studio and PostgreSQL")
    args = ap.parse_args()
    if args.samples % 8:
        ap.error("--samples must be a multiple of 8 (groups of 8)")
    cfg = ScaleConfig(samples=args.samples, image_size=args.image_size)
    home = Path(args.workspace or f"/tmp/sfr-scale/{args.samples}").resolve()
    if args.child:
        child(args.child, str(home), cfg)
        return 0
    if args.stop:
        from annotation import postgres
        from annotation.server import ServerPaths, stop
        ws = _ws(str(home))
        stop(ServerPaths.for_workspace(ws))
        postgres.stop(postgres.Cluster.for_home(ws.home))
        return 0
    if args.annotate_until:
        import calendar
        hh, mm = (int(x) for x in args.annotate_until.split(":"))
        t = time.gmtime()
        until = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, hh, mm, 0, 0, 0, 0))
        home.mkdir(parents=True, exist_ok=True)
        (home / "annotate_until").write_text(str(until))
    if args.redo_from:
        sp = home / STATE
        if sp.exists():
            st = json.loads(sp.read_text())
            drop = STAGES[STAGES.index(args.redo_from):]
            st["stages"] = {k: v for k, v in st["stages"].items() if k not in drop}
            sp.write_text(json.dumps(st, indent=1, default=str))
    state = run(home, cfg, args.stages)
    print(json.dumps({k: round(v["cpu_ms_per_sample"], 2) for k, v in state["stages"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
