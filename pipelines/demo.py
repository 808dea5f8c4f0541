"""`sfr demo`: the whole platform end to end on embedded defaults, no GPU, no downloads.

synthetic edits of real photos -> ingest -> regions -> Label Studio tasks -> simulated
annotators -> sync -> curation -> dataset -> train a small SFReward -> evaluate -> register ->
score held-out samples, run as Dagster materializations against the workspace's Dagster
instance (so the Dagster UI shows them afterwards), then a Markdown + PNG report.
A rerun reuses what exists: the synthetic batch is regenerated only when missing, ingestion,
proposals, tasks, bots and sync are idempotent, and the dataset id is a content hash.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from warehouse.batches import batch_source, batches_of_samples
from warehouse.db import Warehouse
from warehouse.workspace import Workspace

LOCAL_DAGSTER_YAML = """\
# Written by `sfr demo`. See deploy/ for cluster settings.
telemetry:
  enabled: false
"""


# The demo's model and its training settings are the `demo` preset (sfreward.model.presets); on
# top of it only this machine setting (`sfr train --set` keys; user overrides come after these).
# One thread: the small model's steps gain nothing from a second thread on the 2-core machine
# (1,000 steps: ~65 s of CPU with one thread at 128 px, patch 16; a second thread spins under load).
DEMO_PRESET = "demo"
DEMO_TRAIN = ["num_threads=1"]


@dataclass
class DemoConfig:
    # Fields with help text are `sfr demo`'s flags (pipelines/cli/rundemo.py, pipelines/configs.py).
    # 50 sources x 2 groups x 4 rollouts = 400 samples: >= 30 test samples with exactly one bad
    # region on every seed, ~200 training samples, within the 10-minute budget.
    n_sources: int = field(default=50, metadata={
        "help": "synthetic source photos (scikit-image's 8 colour photos, then procedural scenes)"})
    groups_per_source: int = field(default=2, metadata={"help": "instructions per photo (GRPO groups)"})
    rollouts: int = field(default=4, metadata={"help": "edits per GRPO group"})
    image_size: int = field(default=128, metadata={"help": "image side, pixels"})
    seed: int = field(default=0, metadata={"help": "seed of the synthetic data"})
    # Every one of the 4 simulated annotators labels every task: the median of 4 localizes the
    # bad region more often than that of 3 (benchmarks/results/demo_seeds.md).
    annotators_per_task: int = field(default=4, metadata={"help": "simulated annotators per task"})
    project_key: str = "sfreward-demo"
    train_overrides: list[str] = field(default_factory=list, metadata={
        "help": "training config override, applied after the demo's own settings (the demo preset, "
                "sfreward.model.presets), e.g. max_steps=50", "metavar": "KEY=VALUE"})
    n_pictures: int = 4
    # Splits are by source photo (near-duplicates linked), so the test share is large enough to
    # hold >= 30 samples with exactly one bad region (the localization check needs them).
    split_fractions: tuple[float, float, float] = (0.5, 0.1, 0.4)
    curation_overrides: dict = field(default_factory=dict)   # CurationConfig fields
    # Sources beyond the photos: procedural scenes (distinct sources), not mirrored copies.
    extra_sources: str = "procedural"


# ----------------------------------------------------------------------------- demo assets' work
def _batch_folder(ws: Workspace, batch_id: str) -> Path:
    source = batch_source(Warehouse.open(ws), batch_id)
    if source is None:
        raise ValueError(f"batch {batch_id!r} is not registered in {ws.warehouse_path}")
    p = Path(source)
    return p if p.is_dir() else p.parent


def simulate_batch(ws: Workspace, batch_id: str, project_key: str, annotators_per_task: int,
                   progress: Callable[[int], None] | None = None) -> dict:
    """Simulated annotators annotate the batch's tasks from its ground_truth.jsonl."""
    from annotation.simulate import run_bots

    truth = _batch_folder(ws, batch_id) / "ground_truth.jsonl"
    if not truth.exists():
        raise FileNotFoundError(
            f"batch {batch_id} has no {truth.name} beside its manifest: simulated annotators only work "
            "on synthetic batches (`sfr synth`)")
    return run_bots(ws, project_key, truth, max_per_task=annotators_per_task, progress=progress).as_dict()


def _test_rows(ws: Workspace, model_ref: str) -> tuple[str, str, list[dict]]:
    import pyarrow.parquet as pq

    from sfreward import registry
    from warehouse.datasets import open_version, split_path

    rec = registry.get_model(ws, model_ref)
    dataset_id = rec["dataset_id"]
    path = split_path(open_version(ws, dataset_id), "test")
    return rec["model_id"], dataset_id, pq.read_table(path).to_pylist()


def score_heldout(ws: Workspace, model_ref: str = "candidate", n_pictures: int = 4) -> dict[str, Any]:
    """Score the model's test split; write scores JSON and a PNG under <home>/reports/."""
    import sfreward
    from sfreward.viz import score_grid
    from warehouse import masks
    from warehouse.images import decode_rgb

    model_id, dataset_id, rows = _test_rows(ws, model_ref)
    scorer = sfreward.load(model_id, home=ws.home, device="cpu")
    sources = [decode_rgb(r["source"]["bytes"]) for r in rows]
    edits = [decode_rgb(r["edited"]["bytes"]) for r in rows]
    regions = [[{"kind": g["kind"], "mask": g["mask"], "region_id": g["region_id"]} for g in r["regions"]]
               for r in rows]
    scores = scorer.score(sources, edits, [r["instruction"] for r in rows], regions)
    out_dir = ws.reports / "heldout"
    out_dir.mkdir(parents=True, exist_ok=True)
    records, err = [], {"success": [], "preserve": []}
    for r, s in zip(rows, scores):
        records.append({"sample_id": r["sample_id"], **s.to_dict()})
        if not s.valid:
            continue
        labels = {g["region_id"]: g for g in r["regions"]}
        for rs in s.regions:
            lab = labels.get(rs.region_id)
            for dim in ("success", "preserve"):
                if lab is not None and lab.get(dim) is not None and np.isfinite(lab[dim]):
                    err[dim].append(abs(getattr(rs, dim) - lab[dim]))
    scores_json = out_dir / "scores.json"
    scores_json.write_text(json.dumps(records, indent=1, default=float))
    truth = _truth_by_sample(ws, [r["sample_id"] for r in rows])   # read once: check and pictures
    check = reward_check(rows, scores, truth)
    (out_dir / "reward_check.json").write_text(json.dumps(check, indent=1, default=float))
    # Pictures: samples with a bad region by their labels (min(success, preserve) < 12.5) first,
    # then those whose regions differ most in predicted score (most informative).
    order = sorted(range(len(rows)), key=lambda i: (not _has_bad(rows[i]), -_spread(scores[i])))[:n_pictures]
    items = []
    for i in order:
        if not scores[i].valid:
            continue
        r = rows[i]
        ms = np.stack([masks.decode(g["mask"]) for g in r["regions"]])
        by_id = {rs.region_id: rs for rs in scores[i].regions}
        pred = [min(by_id[g["region_id"]].success, by_id[g["region_id"]].preserve)
                if g["kind"] != "background" else by_id[g["region_id"]].preserve for g in r["regions"]]
        labels = [_phi(g.get("success"), g.get("preserve"), g["kind"]) for g in r["regions"]]
        t = truth.get(r["sample_id"])
        t_masks = [masks.decode(g["mask"]) for g in t["regions"]] if t else []
        true_phi = [_phi(*_matched_truth(g, t, t_masks), g["kind"]) for g in r["regions"]]
        # Paint the background first so object regions stay visible on top.
        idx = sorted(range(len(pred)), key=lambda k: r["regions"][k]["kind"] != "background")
        items.append({"source": sources[i], "edited": edits[i], "masks": ms[idx],
                      "scores": [pred[k] for k in idx], "labels": [labels[k] for k in idx],
                      "truth": [true_phi[k] for k in idx],
                      "kinds": [r["regions"][k]["kind"] for k in idx], "instruction": r["instruction"]})
    picture = score_grid(items, out_dir / "heldout_scores.png",
                         title=f"held-out edits, region score = min(success, preserve) by {model_id}")
    return {"model_version": scores[0].model_version if scores else model_id, "dataset_id": dataset_id,
            "n_scored": sum(s.valid for s in scores), "n_invalid": sum(not s.valid for s in scores),
            "picture": str(picture), "scores_json": str(scores_json), "reward_check": check,
            "mae": {k: float(np.mean(v)) if v else None for k, v in err.items()}}


def _truth_by_sample(ws: Workspace, sample_ids: list[str]) -> dict[str, dict]:
    """Ground truth rows (sfreward.synthetic) of these samples, from their batches' folders."""
    from sfreward.synthetic import read_ground_truth

    wh = Warehouse.open(ws)
    batches = batches_of_samples(wh, sample_ids)
    truth: dict[str, dict] = {}
    for b in sorted(batches):
        path = _batch_folder(ws, b) / "ground_truth.jsonl"
        if path.exists():
            truth.update(read_ground_truth(path))
    return truth


def _matched_truth(region: dict, t: dict | None, t_masks: list[np.ndarray]) -> tuple[float, float]:
    """(success, preserve) on 0..25 of the true region of highest mask IoU with a dataset region
    (NaN success for the background, NaN both without ground truth)."""
    from warehouse import masks

    if not t_masks:
        return float("nan"), float("nan")
    m = masks.decode(region["mask"])
    iou = [(m & tm).sum() / max(1, (m | tm).sum()) for tm in t_masks]
    tg = t["regions"][int(np.argmax(iou))]
    return (_f(tg.get("success")) if region["kind"] != "background" else float("nan"), _f(tg.get("preserve")))


def _phi(success: float | None, preserve: float | None, kind: str) -> float:
    """min(success, preserve), the background judged on preserve alone (0..25)."""
    return _f(preserve) if kind == "background" else _f(success, preserve)


def reward_check(rows: list[dict], scores: list, truth: dict[str, dict]) -> dict[str, Any]:
    """Does the model work as a reward on the test split? Region SRCC and localization AUROC
    (sfreward.evaluate.region_metrics, the same definitions as the model evaluation) of the
    predicted region scores against (a) the aggregated (simulated) human labels of the dataset and
    (b) the synthetic ground truth, each dataset region matched to the true region of highest mask
    IoU (truth: ground-truth rows by sample id, _truth_by_sample). Scores on 0..25."""
    from sfreward.evaluate import region_metrics
    from warehouse import masks

    pred, lab, tru, sample = [], [], [], []
    for i, (r, s) in enumerate(zip(rows, scores)):
        if not s.valid:
            continue
        by_id = {rs.region_id: rs for rs in s.regions}
        t = truth.get(r["sample_id"])
        t_masks = [masks.decode(g["mask"]) for g in t["regions"]] if t else []
        for g in r["regions"]:
            rs = by_id[g["region_id"]]
            pred.append([rs.success, rs.preserve])
            lab.append([_f(g.get("success")), _f(g.get("preserve"))])
            tru.append(list(_matched_truth(g, t, t_masks)))
            sample.append(i)
    p, sample_a = np.asarray(pred, float).reshape(-1, 2), np.asarray(sample)
    out: dict[str, Any] = {"n_samples": int(len(set(sample))), "n_regions": int(len(sample))}
    for name, tg in (("vs_labels", lab), ("vs_truth", tru)):
        m = region_metrics(p[:, 0], p[:, 1], np.asarray(tg, float).reshape(-1, 2), sample_a)
        out[name] = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in m.items()}
    return out


def _f(*vals) -> float:
    finite = [float(v) for v in vals if v is not None and np.isfinite(v)]
    return min(finite) if finite else float("nan")


def _has_bad(row: dict, bad: float = 12.5) -> bool:
    return any(_f(g.get("success"), g.get("preserve")) < bad for g in row["regions"])


def _spread(s) -> float:
    if not s.valid or not s.regions:
        return -1.0
    phis = [r.phi for r in s.regions]
    return max(phis) - min(phis)


# ----------------------------------------------------------------------------- orchestration
class Stages:
    """Prints numbered stages with timings to stderr (the user's progress view)."""

    def __init__(self, total: int):
        self.total, self.n, self.t0 = total, 0, time.perf_counter()
        self.times: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.n += 1
        print(f"[{self.n}/{self.total}] {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        out = fn()
        self.times[name] = time.perf_counter() - t
        print(f"[{self.n}/{self.total}] {name}: done in {self.times[name]:.0f} s", file=sys.stderr, flush=True)
        return out


def dagster_instance(ws: Workspace):
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(ws.dagster_home)
    cfg = ws.dagster_home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(LOCAL_DAGSTER_YAML)
    return dg.DagsterInstance.get()


def _materialize(instance, selection: list[str], run_config: dict, home: Path, partition_key: str | None = None):
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.resources import WorkspaceResource

    assets = list(defs.assets or []) + list(defs.asset_checks or [])
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    result = dg.materialize(assets, selection=selection, partition_key=partition_key, instance=instance,
                            resources={"workspace": WorkspaceResource(home=str(home))},
                            run_config={**run_config, **quiet}, raise_on_error=True)
    return result


def run_demo(home: str | os.PathLike | None = None, cfg: DemoConfig | None = None) -> Path:
    """Run everything; returns the report path."""
    from annotation.server import ensure_server
    from sfreward.synthetic import SynthConfig, generate
    from warehouse.ingest import register_batch

    cfg = cfg or DemoConfig()
    ws = Workspace.open(home)
    st = Stages(6)
    synth = SynthConfig(n_sources=cfg.n_sources, groups_per_source=cfg.groups_per_source,
                        rollouts=cfg.rollouts, image_size=cfg.image_size, seed=cfg.seed, extra=cfg.extra_sources)
    folder = ws.incoming / f"demo-synth-seed{cfg.seed}"

    def make_batch():
        manifest = folder / "manifest.jsonl"
        same = (folder / "synth_config.json").exists() and \
            json.loads((folder / "synth_config.json").read_text()) == asdict(synth)
        if not (manifest.exists() and same):
            generate(folder, synth, progress=True)
        return register_batch(ws, manifest)

    batch_id = st.run("synthetic editing samples with ground truth", make_batch)
    base_url, _ = st.run("Label Studio on 127.0.0.1", lambda: ensure_server(ws))
    instance = st.run("Dagster instance", lambda: dagster_instance(ws))
    instance.add_dynamic_partitions("batches", [batch_id])
    per_batch = {"ops": {
        "annotation_tasks": {"config": {"project_key": cfg.project_key, "overlap": cfg.annotators_per_task}},
        "simulated_annotations": {"config": {"project_key": cfg.project_key,
                                             "annotators_per_task": cfg.annotators_per_task}}}}
    st.run("Dagster: ingest -> regions -> Label Studio tasks -> simulated annotation",
           lambda: _materialize(instance, ["editing_samples", "region_proposals", "annotation_tasks",
                                           "simulated_annotations"], per_batch, ws.home, batch_id))
    curation = {"config": {"overrides_json": json.dumps(
        {"fractions": list(cfg.split_fractions), "split_linking": "perceptual", **cfg.curation_overrides})}}
    rest = {"ops": {"synced_annotations": {"config": {"project_keys": [cfg.project_key]}},
                    "agreement_report": curation, "dataset_version": curation,
                    "sfreward_model": {"config": {"preset": DEMO_PRESET,
                                                  "overrides": DEMO_TRAIN + list(cfg.train_overrides)}},
                    "heldout_scores": {"config": {"n_pictures": cfg.n_pictures}}}}
    st.run("Dagster: sync -> curation -> dataset -> train -> evaluate -> held-out scores",
           lambda: _materialize(instance, ["synced_annotations", "aggregated_labels", "agreement_report",
                                           "dataset_version", "dataset_export_hf", "sfreward_model",
                                           "model_evaluation", "heldout_scores"], rest, ws.home))
    report = st.run("report", lambda: write_report(ws, cfg, base_url, st.times, batch_id))
    return report


def write_report(ws: Workspace, cfg: DemoConfig, base_url: str, times: dict[str, float], batch_id: str) -> Path:
    from pipelines.report import demo_report

    return demo_report(ws, cfg, base_url, times, batch_id)
