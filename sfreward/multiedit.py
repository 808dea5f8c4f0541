"""MultiEditBench: instructions that ask for two or more region edits at once, and a scorer.

`build(out_dir, MultiEditConfig)` writes `bench.jsonl` (one item per line: item_id, source,
reference, instruction, the target edits and every region with its COCO RLE mask and kind),
`sources/*.png` and `reference/*.png` (the ideal edit: every instructed edit fully done,
nothing else touched).

`score(bench_dir, outputs)` rates any editor's outputs (a folder of `<item_id>.png`, or a dict
item_id -> uint8/float array [H, W, 3]) per region, on the 0..25 scale of the region reward:
    success   (target regions)  25 * clip(1 - |out - ref| / |src - ref|, 0, 1): how far the
              region moved from the source toward the requested edit (0 = unchanged or worse)
    preserve  (target regions)  fine texture kept: 25 * clip(1 - |hp(out) - hp(ref)| / 0.05, 0, 1)
              with hp = luminance minus its Gaussian blur (sigma 2 px)
              (other regions)   25 * clip(1 - |out - src| / 0.1, 0, 1): untouched = 25
Means |.| are over the region's pixels and channels, images in [0, 1]. Outputs of another size
are resized to the bench size (bilinear) and counted in `resized`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from sfreward.synthetic import ops
from sfreward.synthetic.generator import SynthConfig, _save_png, build_scenes, choose_edit
from warehouse import masks as maskcodec

log = logging.getLogger(__name__)

PRESERVE_TAU = 0.1   # mean |diff| at which an untouched region's preserve score reaches 0
TEXTURE_TAU = 0.05   # same for the high-pass luminance of a target region
SUCCESS_OK = 17.5    # a target counts as done at 70 % of the way


@dataclass
class MultiEditConfig:
    # Help text: `sfr multiedit build`'s flags come from these fields (pipelines/configs.py).
    n_items: int = field(default=8, metadata={"help": "bench items (instructions)"})
    n_targets: int = field(default=2, metadata={"help": "regions to edit per instruction (>= 2)"})
    image_size: int = field(default=256, metadata={"help": "image side in pixels"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    source_dir: str | None = field(default=None, metadata={"help": "folder of photos to use instead of scikit-image's"})

    def validate(self) -> None:
        if self.n_targets < 2:
            raise ValueError(f"MultiEditConfig.n_targets must be >= 2 (multi-region), got {self.n_targets}")
        if self.n_items < 1:
            raise ValueError(f"MultiEditConfig.n_items must be >= 1, got {self.n_items}")


def _join(texts: list[str]) -> str:
    parts = [t.rstrip(".") for t in texts]
    parts = [parts[0]] + [p[0].lower() + p[1:] for p in parts[1:]]
    return (", ".join(parts[:-1]) + ", and " + parts[-1] + ".") if len(parts) > 2 else f"{parts[0]} and {parts[1]}."


def build(out_dir: str | Path, cfg: MultiEditConfig | None = None) -> Path:
    """Write the bench into `out_dir`; returns the path of bench.jsonl. Deterministic."""
    cfg = cfg or MultiEditConfig()
    cfg.validate()
    out = Path(out_dir)
    scenes = build_scenes(SynthConfig(n_sources=cfg.n_items, image_size=cfg.image_size,
                                      n_regions=cfg.n_targets + 1, seed=cfg.seed, source_dir=cfg.source_dir))
    rows = []
    for si, scene in enumerate(scenes):
        n_obj = scene.n_regions - 1
        if n_obj < cfg.n_targets:
            log.warning("source %s has %d regions, fewer than %d targets; skipped", scene.name, n_obj, cfg.n_targets)
            continue
        rng = np.random.default_rng([cfg.seed, si, 7])
        targets = sorted(int(t) for t in rng.choice(n_obj, size=cfg.n_targets, replace=False))
        edits, ref = [], scene.image
        for t in targets:
            op = choose_edit(scene, t, rng)
            ref = ops.apply_edit(ref, scene.masks[t], op, 1.0)
            edits.append({"region": t, "op": op["op"], "color": op.get("color"), "category": op["category"],
                          "text": op["text"]})
        item_id = f"me{cfg.seed}-{scene.name}"
        _save_png(scene.image, out / "sources" / f"{item_id}.png")
        _save_png(ref, out / "reference" / f"{item_id}.png")
        regions = []
        for k in range(scene.n_regions):
            m = scene.masks[k]
            kind = "edit" if k in targets else ("background" if k == scene.n_regions - 1 else "context")
            regions.append({"index": k, "kind": kind, "name": scene.names[k], "mask": maskcodec.encode(m),
                            "bbox": list(maskcodec.bbox_xyxy(m)), "area": int(m.sum())})
        rows.append({"item_id": item_id, "source": f"sources/{item_id}.png",
                     "reference": f"reference/{item_id}.png", "instruction": _join([e["text"] for e in edits]),
                     "edits": edits, "regions": regions, "height": cfg.image_size, "width": cfg.image_size})
    with open(out / "bench.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    (out / "multiedit_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return out / "bench.jsonl"


def load_bench(bench: str | Path) -> tuple[Path, list[dict]]:
    """(bench folder, items) from a bench folder or its bench.jsonl."""
    p = Path(bench)
    path = p / "bench.jsonl" if p.is_dir() else p
    if not path.is_file():
        raise FileNotFoundError(f"no MultiEditBench at {bench} (expected bench.jsonl; build it with `sfr multiedit build`)")
    with open(path) as f:
        items = [json.loads(line) for line in f if line.strip()]
    return path.parent, items


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float32) / 255.0


def _as_float(img: np.ndarray, h: int, w: int) -> tuple[np.ndarray, bool]:
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"output must be an RGB array [H, W, 3], got shape {a.shape}")
    a = a[..., :3].astype(np.float32)
    if a.max() > 1.0:
        a = a / 255.0
    if a.shape[:2] == (h, w):
        return a, False
    im = Image.fromarray(np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    return np.asarray(im, np.float32) / 255.0, True


def _highpass(img: np.ndarray) -> np.ndarray:
    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    return lum - ndimage.gaussian_filter(lum, 2.0)


def region_scores(src: np.ndarray, out: np.ndarray, ref: np.ndarray, mask: np.ndarray, target: bool) -> dict:
    """{success (target only, else None), preserve} on 0..25 for one region (see module doc)."""
    if target:
        gap = float(np.abs(src[mask] - ref[mask]).mean())
        left = float(np.abs(out[mask] - ref[mask]).mean())
        success = 25.0 * float(np.clip(1 - left / max(gap, 1e-6), 0, 1))
        tex = float(np.abs(_highpass(out)[mask] - _highpass(ref)[mask]).mean())
        return {"success": round(success, 3), "preserve": round(25.0 * float(np.clip(1 - tex / TEXTURE_TAU, 0, 1)), 3)}
    mad = float(np.abs(out[mask] - src[mask]).mean())
    return {"success": None, "preserve": round(25.0 * float(np.clip(1 - mad / PRESERVE_TAU, 0, 1)), 3)}


def score(bench: str | Path, outputs: str | Path | dict[str, np.ndarray]) -> dict:
    """Per-region success/preservation of an editor's outputs; returns
    {"items": [{item_id, status, regions: [...]}], "summary": {...}}. A missing or unreadable
    output is reported in its item's status and left out of the means; it never stops the run."""
    root, items = load_bench(bench)
    results, resized = [], 0
    for item in items:
        iid, h, w = item["item_id"], item["height"], item["width"]
        try:
            if isinstance(outputs, dict):
                if iid not in outputs:
                    raise FileNotFoundError(f"no output for item {iid}")
                raw = outputs[iid]
            else:
                path = Path(outputs) / f"{iid}.png"
                if not path.is_file():
                    raise FileNotFoundError(f"no output file {path}")
                raw = _read(path)
            out, was_resized = _as_float(raw, h, w)
        except (OSError, ValueError) as e:
            results.append({"item_id": iid, "status": f"error: {e}", "regions": []})
            continue
        resized += was_resized
        src, ref = _read(root / item["source"]), _read(root / item["reference"])
        regs = []
        for r in item["regions"]:
            s = region_scores(src, out, ref, maskcodec.decode(r["mask"]), r["kind"] == "edit")
            regs.append({"index": r["index"], "kind": r["kind"], "name": r["name"], **s})
        results.append({"item_id": iid, "status": "ok", "regions": regs})
    ok = [r for r in results if r["status"] == "ok"]
    succ = [g["success"] for r in ok for g in r["regions"] if g["kind"] == "edit"]
    t_pres = [g["preserve"] for r in ok for g in r["regions"] if g["kind"] == "edit"]
    o_pres = [g["preserve"] for r in ok for g in r["regions"] if g["kind"] != "edit"]
    all_done = [all(g["success"] >= SUCCESS_OK for g in r["regions"] if g["kind"] == "edit") for r in ok]

    def mean(v):
        return round(float(np.mean(v)), 3) if v else None

    summary = {"n_items": len(items), "n_scored": len(ok), "n_missing": len(items) - len(ok),
               "resized": resized, "target_success": mean(succ), "target_preserve": mean(t_pres),
               "other_preserve": mean(o_pres), "all_targets_done": mean([float(a) for a in all_done])}
    return {"items": results, "summary": summary}
