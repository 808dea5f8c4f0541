"""Fewer, better regions: recall of the true edit regions and regions per task, before and after
fragment merging, sliver dropping and the new region cap, on synthetic ground truth.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_region_recall.py

Workload: scenes of the synthetic generator (scikit-image photos, 256 px, 4 regions each).
Single-region edits: one scene region edited (the instructed edit, full strength). Multi-region
edits (MultiEditBench-style: "recolour A to blue and B to red"): two scene regions edited with
different colours; both must be found as separate edit regions. A true edit region counts as
recalled when one proposed `edit` region covers at least half of it with IoU >= 0.5.
Configurations: the baseline (max_regions 12, no merging, no sliver filter: the proposer of
dbbcf43) and today's defaults. Classical proposer (no weights needed). Writes
benchmarks/results/region_recall.md.
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
from sfreward.synthetic.generator import SynthConfig, build_scenes  # noqa: E402
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
    base = dataclasses.replace(new, max_regions=12, fragment_gap_frac=0.0, sliver_px=0)
    rows = []
    for label, cfg in (("baseline (max_regions 12, no merging)", base),
                       (f"now (max_regions {new.max_regions}, gap {new.fragment_gap_frac}, sliver {new.sliver_px} px)", new)):
        r = evaluate(cases, cfg)
        for kind in ("single", "multi"):
            x = r[kind]
            rows.append(f"| {label} | {kind} | {len(x['regions'])} | {x['hit']}/{x['true']} ({x['hit'] / x['true']:.2f}) | "
                        f"{np.mean(x['regions']):.1f} | {np.mean(x['edit_regions']):.2f} |")
            print(rows[-1], flush=True)
    md = ["# Region proposals: recall of true edit regions vs regions per task", "",
          "Command: `PYTHONPATH=. .venv/bin/python benchmarks/bench_region_recall.py` (classical proposer, "
          "256 px synthetic scenes, 4 regions each; see the script's docstring).", "",
          "| config | edits | cases | true edit regions recalled | regions / task (incl. background) | edit regions / task |",
          "|---|---|---|---|---|---|", *rows, ""]
    (ROOT / "benchmarks" / "results" / "region_recall.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
