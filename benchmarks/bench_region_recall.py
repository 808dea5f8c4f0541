"""Fewer, better regions: recall of the true edit regions and regions per task, before and after
fragment merging, sliver dropping and the new region cap, on synthetic ground truth.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_region_recall.py

Workload: scenes of the synthetic generator (scikit-image photos, 256 px, 4 regions each).
Single-region edits: one scene region edited (the instructed edit, full strength). Multi-region
edits (MultiEditBench-style: "recolour A to blue and B to red"): two scene regions edited with
different colours; both must be found as separate edit regions. A true edit region counts as
recalled when one proposed `edit` region covers at least half of it with IoU >= 0.5.
GRPO groups (the demo's workload: 128 px scenes with 2 objects and a background, 4 rollouts made
by the synthetic editor, each rollout doing the instructed edit well, partly, wrongly or not at
all and sometimes damaging the other regions; one proposal per group): the instructed target
and every region some rollout damaged are the true edit regions.
Configurations: the baseline (max_regions 12, no merging, no sliver filter: the proposer of
dbbcf43), the defaults before the split by rollouts, and today's defaults. Classical proposer
(no weights needed). Writes benchmarks/results/region_recall.md.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sfreward.regions import ProposerConfig, propose_group  # noqa: E402
from sfreward.synthetic import ops  # noqa: E402
from sfreward.synthetic.generator import SynthConfig, build_scenes, choose_edit, render_rollout  # noqa: E402
from sfreward.synthetic.scene import PALETTE  # noqa: E402

COLORS = list(PALETTE)


def u8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def workload(n_sources: int) -> list[tuple[np.ndarray, np.ndarray, list[np.ndarray], str]]:
    """(source uint8, edited uint8, true edit masks, 'single' | 'multi') per case."""
    scenes = build_scenes(SynthConfig(n_sources=n_sources, image_size=256, n_regions=4))
    out = []
    for si, sc in enumerate(scenes):
        objs = list(range(sc.n_regions - 1))
        for t in objs:                       # single-region edits
            ed = ops.apply_edit(sc.image, sc.masks[t], {"op": "recolor", "color": COLORS[(si + t) % len(COLORS)]})
            out.append((u8(sc.image), u8(ed), [sc.masks[t]], "single"))
        for a, b in [(objs[0], objs[1]), (objs[1], objs[-1])]:   # two targets, two colours
            ed = ops.apply_edit(sc.image, sc.masks[a], {"op": "recolor", "color": COLORS[si % len(COLORS)]})
            ed = ops.apply_edit(ed, sc.masks[b], {"op": "recolor", "color": COLORS[(si + 3) % len(COLORS)]})
            out.append((u8(sc.image), u8(ed), [sc.masks[a], sc.masks[b]], "multi"))
    return out


def group_workload(n_sources: int, seed: int = 0):
    """(source uint8, [edited uint8] x 4, [target mask], [damaged non-target masks]) per group,
    two instructions per scene as in the demo."""
    scenes = build_scenes(SynthConfig(n_sources=n_sources, image_size=128, n_regions=3, extra="procedural"))
    out = []
    for si, sc in enumerate(scenes):
        for g in range(2):
            rng = np.random.default_rng([seed, si, g])
            target = (si + g) % (sc.n_regions - 1)
            op = choose_edit(sc, target, rng)
            clean_at = int(rng.integers(4))
            rolls = [render_rollout(sc, target, op, rng, clean=(r == clean_at)) for r in range(4)]
            damaged = sorted({rec["index"] for _, recs, _ in rolls for rec in recs
                              if rec["kind"] != "edit" and rec["verdict"] != "fine"})
            out.append((u8(sc.image), [u8(img) for img, _, _ in rolls], [sc.masks[target]],
                        [sc.masks[k] for k in damaged]))
    return out


def evaluate_groups(groups, cfg: ProposerConfig) -> dict:
    res = {"groups": len(groups), "target": 0, "damaged": 0, "damaged_true": 0, "regions": [], "edit_regions": []}
    for src, eds, targets, damaged in groups:
        regs = propose_group(src, eds, cfg)
        edits = [r.mask for r in regs if r.kind == "edit"]
        res["target"] += sum(recalled(t, edits) for t in targets)
        res["damaged"] += sum(recalled(t, edits) for t in damaged)
        res["damaged_true"] += len(damaged)
        res["regions"].append(len(regs))
        res["edit_regions"].append(len(edits))
    return res


def recalled(truth: np.ndarray, edits: list[np.ndarray]) -> bool:
    for m in edits:
        inter = (m & truth).sum()
        if inter >= 0.5 * truth.sum() and inter / (m | truth).sum() >= 0.5:
            return True
    return False


def evaluate(cases, cfg: ProposerConfig) -> dict:
    res = {k: {"true": 0, "hit": 0, "regions": [], "edit_regions": []} for k in ("single", "multi")}
    for src, ed, truths, kind in cases:
        regs = propose_group(src, [ed], cfg)
        edits = [r.mask for r in regs if r.kind == "edit"]
        r = res[kind]
        r["true"] += len(truths)
        r["hit"] += sum(recalled(t, edits) for t in truths)
        r["regions"].append(len(regs))
        r["edit_regions"].append(len(edits))
    return res


def main() -> None:
    cases = workload(6)
    new = ProposerConfig()
    base = dataclasses.replace(new, max_regions=12, fragment_gap_frac=0.0, sliver_px=0, rollout_split=False)
    unsplit = dataclasses.replace(new, rollout_split=False)
    configs = (("baseline (max_regions 12, no merging)", base),
               (f"merging (max_regions {new.max_regions}, gap {new.fragment_gap_frac}, sliver {new.sliver_px} px)", unsplit),
               (f"now (merging + split by rollouts, share {new.rollout_split_share})", new))
    rows = []
    for label, cfg in configs[::2]:  # one image per task: the split has nothing to split by
        r = evaluate(cases, cfg)
        for kind in ("single", "multi"):
            x = r[kind]
            rows.append(f"| {label} | {kind} | {len(x['regions'])} | {x['hit']}/{x['true']} ({x['hit'] / x['true']:.2f}) | "
                        f"{np.mean(x['regions']):.1f} | {np.mean(x['edit_regions']):.2f} |")
            print(rows[-1], flush=True)
    groups = group_workload(50)
    grows = []
    for label, cfg in configs:
        r = evaluate_groups(groups, cfg)
        grows.append(f"| {label} | {r['groups']} | {r['target']}/{r['groups']} ({r['target'] / r['groups']:.2f}) | "
                     f"{r['damaged']}/{r['damaged_true']} ({r['damaged'] / max(1, r['damaged_true']):.2f}) | "
                     f"{np.mean(r['regions']):.1f} | {np.mean(r['edit_regions']):.2f} |")
        print(grows[-1], flush=True)
    md = ["# Region proposals: recall of true edit regions vs regions per task", "",
          "Command: `PYTHONPATH=. .venv/bin/python benchmarks/bench_region_recall.py` (classical proposer, "
          "256 px synthetic scenes, 4 regions each; see the script's docstring).", "",
          "| config | edits | cases | true edit regions recalled | regions / task (incl. background) | edit regions / task |",
          "|---|---|---|---|---|---|", *rows, "",
          "GRPO groups (4 rollouts each, the demo's 128 px scenes, 50 sources x 2 instructions):", "",
          "| config | groups | instructed target recalled | damaged regions recalled | regions / task (incl. background) | edit regions / task |",
          "|---|---|---|---|---|---|", *grows, ""]
    (ROOT / "benchmarks" / "results" / "region_recall.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
