"""Synthetic editing samples with known per-region quality.

For each source photo one or more instructions are written ("Recolor the orange region in the
upper left to blue."), and for each instruction a GRPO group of `rollouts` edited images is made
with different mixes: the instructed edit done fully, partly, wrongly or not at all in the target
region; artifacts (blur, noise, blocky patches, colour bleeding) or unintended changes (hue,
brightness, contrast) in other regions; the rest untouched (bit-identical to the source).
One rollout of every group (at a random position) is the clean, correct edit.

Output folder:
    manifest.jsonl      one row per sample: sample_id, group_id, source, edited (paths relative
                        to the manifest), instruction, editor, category, metadata
    ground_truth.jsonl  one row per sample: regions (COCO RLE mask, kind, success/preserve on
                        0..25, verdict, what was done) and image-level naturalness/artifacts/overall
    sources/*.png, edited/*.png
Ground truth is kept out of the manifest so that nothing downstream can read it by accident.

Scores (0..25):
    edit region     success = 25 * strength (missed 0, wrong colour 2.5); preserve 25, or
                    25 * (1 - 0.7 * severity) when an artifact hit it too
    other regions   preserve 25 untouched, 25 * (1 - 0.7 s) artifact, 25 * (1 - 0.6 s) unintended;
                    success of a context region = its preserve (what it was asked was to stay
                    as it is), of the background null (the labeling config does not ask it)
    image           artifacts = 25 * (1 - 0.7 * worst artifact severity);
                    naturalness = 25 * (1 - 0.5 * worst artifact severity - 0.2 [unintended]
                    - 0.2 [wrong edit]); overall = mean(edit success, worst preserve, artifacts)
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import color

from sfreward.synthetic import ops
from sfreward.synthetic.scene import PALETTE, Scene, load_sources, make_scene, procedural_photo
from warehouse import masks as maskcodec

log = logging.getLogger(__name__)

GENERATOR = "sfreward.synthetic/v1"
MIN_VISIBLE = 0.02  # mean |diff| (0..1) a damaged region must show; weaker damage is redone


@dataclass
class SynthConfig:
    # Fields with help text are `sfr synth`'s flags (pipelines/configs.py).
    n_sources: int = field(default=6, metadata={"help": "source photos (beyond the photos there are: see SynthConfig.extra)"})
    groups_per_source: int = field(default=1, metadata={"help": "instructions per photo"})
    rollouts: int = field(default=4, metadata={"help": "edited images per instruction (GRPO group)"})
    image_size: int = field(default=256, metadata={"help": "image side in pixels"})
    n_regions: int = field(default=3, metadata={"help": "regions per photo besides the background"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    source_dir: str | None = field(default=None, metadata={"help": "folder of photos to use instead of scikit-image's"})
    editor: str = "synthetic-v1"
    # How sources beyond the photos are made: 'variants' mirrors or turns the photos (copies:
    # the perceptual split scheme keeps them with their original), 'procedural' draws new
    # scenes (scene.procedural_photo; distinct sources, so held-out sets can grow).
    extra: str = "variants"

    def validate(self) -> None:
        if self.extra not in ("variants", "procedural"):
            raise ValueError(f"SynthConfig.extra must be 'variants' or 'procedural', got {self.extra!r}")
        for name, low in (("n_sources", 1), ("groups_per_source", 1), ("rollouts", 1),
                          ("image_size", 32), ("n_regions", 2)):
            if getattr(self, name) < low:
                raise ValueError(f"SynthConfig.{name} must be >= {low}, got {getattr(self, name)}")


# Variants of a photo for configs that ask for more sources than there are photos.
VARIANTS = [lambda p: p, lambda p: p[:, ::-1], lambda p: p[::-1], lambda p: np.rot90(p), lambda p: np.rot90(p, 3)]


def build_scenes(cfg: SynthConfig) -> list[Scene]:
    """The first `cfg.n_sources` usable scenes (photos without enough structure are skipped;
    when more sources are asked than exist, photos are reused mirrored or rotated, or procedural
    scenes are added: `cfg.extra`)."""
    cfg.validate()
    photos = load_sources(cfg.source_dir)
    scenes: list[Scene] = []
    n_extra = cfg.n_sources * 4 if cfg.extra == "procedural" else len(photos) * (len(VARIANTS) - 1)
    for i in range(len(photos) + n_extra):
        if len(scenes) == cfg.n_sources:
            break
        if i < len(photos):
            name, photo = photos[i]
        elif cfg.extra == "procedural":
            j = i - len(photos)
            name, photo = f"procedural{j}", procedural_photo(j, max(256, cfg.image_size))
        else:  # a photo used again is mirrored or turned: a different source image
            name, photo = photos[i % len(photos)]
            variant = i // len(photos)
            photo = VARIANTS[variant](photo)
            name = f"{name}-v{variant}"
        try:
            scene = make_scene(name, photo, cfg.image_size, cfg.n_regions)
        except ValueError as e:
            log.warning("%s", e)
            continue
        scene.name = f"{len(scenes):03d}_{name}"
        scenes.append(scene)
    if not scenes:
        raise ValueError("no source photo gave at least two regions; try other photos or a larger image_size")
    return scenes


def choose_edit(scene: Scene, target: int, rng: np.random.Generator, ops_allowed=None) -> dict:
    """An instructed edit for region `target`: {"op", "color"?, "category", "text"}."""
    img, mask = scene.image, scene.masks[target]
    allowed = [o for o in (ops_allowed or ops.EDIT_OPS) if ops.edit_applicable(o, img, mask)]
    weights = np.array([3.0 if o == "recolor" else 1.0 for o in allowed])
    op = {"op": str(rng.choice(allowed, p=weights / weights.sum()))}
    if op["op"] == "recolor":
        hue = color.rgb2hsv(img[mask].mean(0).reshape(1, 1, 3))[0, 0, 0] * 360
        far = [c for c, h in PALETTE.items() if min(abs(h - hue), 360 - abs(h - hue)) > 60]
        op["color"] = str(rng.choice(far))
    category, templates = ops.EDIT_OPS[op["op"]]
    op["category"] = category
    op["text"] = str(rng.choice(templates)).format(r=scene.names[target], c=op.get("color", ""))
    return op


def _wrong_op(op: dict, rng: np.random.Generator) -> dict:
    if op["op"] == "recolor":
        return {"op": "recolor", "color": str(rng.choice([c for c in PALETTE if c != op["color"]]))}
    return {"op": {"brighten": "darken", "darken": "brighten"}.get(op["op"], "recolor"),
            "color": str(rng.choice(list(PALETTE)))}


def _visible(apply, before: np.ndarray, mask: np.ndarray, severity: float):
    """Apply a damage function, retrying at full severity if the change would be invisible."""
    after = apply(severity)
    if ops.region_change(before, after, mask) < MIN_VISIBLE:
        severity = 1.0
        after = apply(severity)
    return after, severity


def render_rollout(scene: Scene, target: int, op: dict, rng: np.random.Generator, clean: bool):
    """One rollout: (edited float image [H, W, 3], per-region records, image-level scores)."""
    img = scene.image.copy()
    k_bg = scene.n_regions - 1
    recs: list[dict] = []
    worst_art, any_unintended, wrong = 0.0, False, False
    outcome = "correct" if clean else str(rng.choice(["correct", "partial", "missed", "wrong"],
                                                     p=[0.35, 0.25, 0.2, 0.2]))
    for k in range(scene.n_regions):
        mask = scene.masks[k]
        kind = "edit" if k == target else ("background" if k == k_bg else "context")
        rec = {"index": k, "kind": kind, "name": scene.names[k], "success": None, "preserve": 25.0,
               "verdict": "fine", "changes": []}
        if kind == "edit":
            strength = {"correct": rng.uniform(0.9, 1.0), "partial": rng.uniform(0.35, 0.6),
                        "missed": 0.0, "wrong": 1.0}[outcome]
            applied = _wrong_op(op, rng) if outcome == "wrong" else op
            wrong = outcome == "wrong"
            if strength > 0:
                img = ops.apply_edit(img, mask, applied, strength)
            rec["success"] = 2.5 if wrong else round(25 * strength, 2)
            rec["changes"].append({"type": "edit", "outcome": outcome, "strength": round(strength, 3),
                                   "op": {k2: v for k2, v in applied.items() if k2 in ("op", "color")}})
            rec["verdict"] = "correct_edit" if rec["success"] >= 17.5 else "missed_edit"
            damage = "artifact" if (not clean and rng.random() < 0.15) else "none"
        elif clean:
            damage = "none"
        else:
            p = [0.6, 0.2, 0.2] if kind == "background" else [0.45, 0.35, 0.2]
            damage = str(rng.choice(["none", "artifact", "unintended"], p=p))
        if damage == "artifact":
            art = str(rng.choice(ops.ARTIFACTS))
            before = img
            img, sev = _visible(lambda s: ops.apply_artifact(before, mask, art, s, rng), before, mask,
                                float(rng.uniform(0.4, 1.0)))
            if ops.region_change(before, img, mask) < MIN_VISIBLE:  # e.g. blur on a flat region
                art, sev = "noise", 1.0
                img = ops.apply_artifact(before, mask, art, sev, rng)
            worst_art = max(worst_art, sev)
            rec["preserve"] = round(25 * (1 - 0.7 * sev), 2)
            rec["verdict"] = "artifact"
            rec["changes"].append({"type": "artifact", "artifact": art, "severity": round(sev, 3)})
        elif damage == "unintended":
            change = str(rng.choice(ops.UNINTENDED))
            before = img
            img, sev = _visible(lambda s: ops.apply_unintended(before, mask, change, s), before, mask,
                                float(rng.uniform(0.4, 1.0)))
            if ops.region_change(before, img, mask) < MIN_VISIBLE:  # e.g. contrast on a flat region
                change, sev = "brightness", 1.0
                img = ops.apply_unintended(before, mask, change, sev)
            any_unintended = True
            rec["preserve"] = round(25 * (1 - 0.6 * sev), 2)
            rec["verdict"] = "unintended_change"
            rec["changes"].append({"type": "unintended", "change": change, "severity": round(sev, 3)})
        if kind == "context":
            rec["success"] = rec["preserve"]
        recs.append(rec)
    artifacts = 25 * (1 - 0.7 * worst_art)
    image = {
        "artifacts": round(artifacts, 2),
        "naturalness": round(25 * max(0.0, 1 - 0.5 * worst_art - 0.2 * any_unintended - 0.2 * wrong), 2),
        "overall": round((recs[target]["success"] + min(r["preserve"] for r in recs) + artifacts) / 3, 2),
    }
    return img, recs, image


def _save_png(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path, optimize=False)


def generate(out_dir: str | Path, cfg: SynthConfig | None = None, progress: bool = False) -> Path:
    """Write a synthetic batch (see module docstring) into `out_dir`; returns the manifest path.
    Deterministic for a given config."""
    cfg = cfg or SynthConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scenes = build_scenes(cfg)
    rows, truths = [], []
    jobs = [(si, g) for si in range(len(scenes)) for g in range(cfg.groups_per_source)]
    if progress:
        from tqdm import tqdm
        jobs = tqdm(jobs, desc="synthetic groups", unit="group")
    for si, g in jobs:
        scene = scenes[si]
        rng = np.random.default_rng([cfg.seed, si, g])
        n_obj = scene.n_regions - 1
        target = (si + g) % n_obj
        op = choose_edit(scene, target, rng)
        src_rel = f"sources/{scene.name}.png"
        if g == 0:
            _save_png(scene.image, out / src_rel)
        group_id = f"syn{cfg.seed}-{scene.name}-g{g}"
        clean_at = int(rng.integers(cfg.rollouts))  # not always first: positions carry no signal
        group_rows = []
        for r in range(cfg.rollouts):
            img, recs, image = render_rollout(scene, target, op, rng, clean=(r == clean_at))
            group_rows.append((img, recs, image))
        # Every group needs at least one damaged non-target region to be informative.
        if cfg.rollouts > 1 and not any(rec["kind"] != "edit" and rec["verdict"] != "fine"
                                        for _, recs, _ in group_rows for rec in recs):
            for attempt in range(20):
                img, recs, image = render_rollout(scene, target, op, rng, clean=False)
                if any(rec["kind"] != "edit" and rec["verdict"] != "fine" for rec in recs):
                    group_rows[(clean_at + 1) % cfg.rollouts] = (img, recs, image)
                    break
        for r, (img, recs, image) in enumerate(group_rows):
            sample_id = f"{group_id}-r{r}"
            edited_rel = f"edited/{sample_id}.png"
            _save_png(img, out / edited_rel)
            rows.append({"sample_id": sample_id, "group_id": group_id, "source": src_rel,
                         "edited": edited_rel, "instruction": op["text"], "editor": cfg.editor,
                         "category": op["category"],
                         "metadata": {"synthetic": True, "generator": GENERATOR, "seed": cfg.seed,
                                      "source_name": scene.name, "rollout": r}})
            regions = []
            for rec in recs:
                m = scene.masks[rec["index"]]
                regions.append({**rec, "mask": maskcodec.encode(m), "bbox": list(maskcodec.bbox_xyxy(m)),
                                "area": int(m.sum())})
            truths.append({"sample_id": sample_id, "group_id": group_id, "instruction": op["text"],
                           "edit": {k: v for k, v in op.items() if k in ("op", "color")},
                           "height": cfg.image_size, "width": cfg.image_size,
                           "regions": regions, **image})
    _write_jsonl(out / "manifest.jsonl", rows)
    _write_jsonl(out / "ground_truth.jsonl", truths)
    (out / "synth_config.json").write_text(json.dumps(asdict(cfg), indent=2, sort_keys=True))
    return out / "manifest.jsonl"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def read_ground_truth(path: str | Path) -> dict[str, dict]:
    """ground_truth.jsonl -> {sample_id: record}; a malformed line raises naming its number."""
    out = {}
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                out[rec["sample_id"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: line {i} is not a ground-truth record ({e})") from e
    return out
