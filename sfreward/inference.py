"""Scoring edited images with a trained SFReward model.

`sfreward.load(alias_or_path)` returns a `Scorer`. `Scorer.score(sources, edits, instructions,
regions)` takes a batch of any size (PIL images, uint8 arrays [H, W, 3] / [H, W], CHW tensors,
encoded PNG/JPEG/.npy bytes or file paths; see sfreward.inputs), resizes images and region masks to the model's input size,
runs the model in chunks of `ScorerConfig.batch_size` and returns one `ItemScore` per item.

A bad item (undecodable image, mask of the wrong size, empty instruction, non-finite model
output) comes back with `valid=False` and an `error` naming the input and the problem; the rest
of the batch is scored normally.

Region rewards follow docs/spatial-credit.md: `phi_r = min(success_r, preserve_r)` (the
background region: its preserve score), `AES = min(naturalness, artifacts)`,
`R_r = sqrt(phi_r * AES) / 25` in [0, 1]. All scores are on the 0..25 scale.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from sfreward.inputs import (  # noqa: F401  (re-exported: the serving API's input helpers)
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_REGIONS,
    KINDS,
    NPY_MAGIC,
    InvalidInput,
    RegionInput,
    mask_bbox,
    region_meta,
    to_model_tensor,
    decode_image,
    decode_npy,
    normalize_regions,
    resize_masks,
)

from warehouse.scale import REWARD_MAX  # noqa: E402  (the one label scale)
_REGION_COLS = ("success", "preserve", "success_std", "preserve_std")   # model outputs per region
_ITEM_COLS = ("naturalness", "artifacts", "overall")                    # ... and per item


@dataclass
class RegionScore:
    region_id: str
    kind: str
    bbox: list[int]            # [x1, y1, x2, y2] on the source image, x2/y2 exclusive
    area: int                  # pixels on the source image
    success: float             # 0..25
    preserve: float
    success_std: float
    preserve_std: float
    phi: float                 # min(success, preserve); background: preserve
    reward: float              # sqrt(phi * AES) / 25, in [0, 1]

    def to_dict(self) -> dict[str, Any]:
        """Same as dataclasses.asdict (bbox copied), faster."""
        d = {f: getattr(self, f) for f in _REGION_FIELDS}
        d["bbox"] = list(self.bbox)
        return d


@dataclass
class ItemScore:
    valid: bool
    error: str | None = None
    regions: list[RegionScore] = field(default_factory=list)   # background last
    naturalness: float | None = None
    artifacts: float | None = None
    overall: float | None = None
    aes: float | None = None                                   # min(naturalness, artifacts)
    model_version: str | None = None

    @property
    def rewards(self) -> list[float]:
        """Scalar region rewards R_r, in region order (background last)."""
        return [r.reward for r in self.regions]

    @property
    def background(self) -> RegionScore | None:
        return next((r for r in self.regions if r.kind == "background"), None)

    @property
    def uncertainty(self) -> float:
        """Mean predicted std over regions and both criteria (0..25); NaN when invalid."""
        if not self.valid or not self.regions:
            return float("nan")
        return float(np.mean([(r.success_std + r.preserve_std) / 2 for r in self.regions]))

    def to_dict(self) -> dict[str, Any]:
        # By hand: asdict's recursive deep copy is ~6x slower, on every response of the server.
        d = {f: getattr(self, f) for f in _ITEM_FIELDS}
        d["regions"] = [r.to_dict() for r in self.regions]
        d["rewards"] = self.rewards
        bg = self.background
        d["background"] = bg.to_dict() if bg is not None else None
        d["uncertainty"] = None if not self.valid else self.uncertainty
        return d


_REGION_FIELDS = tuple(f.name for f in fields(RegionScore))
_ITEM_FIELDS = tuple(f.name for f in fields(ItemScore))


# --------------------------------------------------------------------------- inputs
@dataclass
class PreparedItem:
    """One item resized to the model: source/edit float [3, h, w] in [0, 1], masks bool [K, h, w]."""
    source: torch.Tensor
    edit: torch.Tensor
    instruction: str
    masks: torch.Tensor
    regions: list[tuple[str, str, list[int], int]]   # (region_id, kind, bbox, area) per mask


@dataclass
class ScorerConfig:
    batch_size: int = 16                  # items per model call ("device-sized chunks")
    max_pixels: int = DEFAULT_MAX_PIXELS  # decoded images larger than this are invalid
    max_regions: int = DEFAULT_MAX_REGIONS  # regions per item; more make the item invalid

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_pixels", "max_regions"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ScorerConfig.{name} must be an integer >= 1, got {v!r}")


def region_reward(phi: float, aes: float) -> float:
    """R = sqrt(phi * AES) / 25 with both clamped to 0..25 (docs/spatial-credit.md)."""
    return math.sqrt(min(max(phi, 0.0), REWARD_MAX) * min(max(aes, 0.0), REWARD_MAX)) / REWARD_MAX


def _takes_kinds(model: Any) -> bool:
    import inspect
    try:
        return "kinds" in inspect.signature(model.predict).parameters
    except (TypeError, ValueError, AttributeError):
        return False


class Scorer:
    """Wraps a model that follows the model interface contract (docs/architecture.md)."""

    def __init__(self, model: Any, version: str, device: str | torch.device = "cpu",
                 image_size: int | tuple[int, int] | None = None, config: ScorerConfig | None = None):
        self.model = model
        self.version = version
        self.device = torch.device(device)
        self.config = config or ScorerConfig()
        size = image_size if image_size is not None else _model_image_size(model)
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)

    # -- preparation (CPU, thread-safe) ------------------------------------------------
    def prepare_group(self, source: Any, edits: Sequence[Any], instruction: Any,
                      regions: Sequence[Any] | None, source_name: str = "source",
                      edit_names: Sequence[str] | None = None) -> list[PreparedItem | InvalidInput]:
        """Rollouts sharing one source/instruction/region set: the source and masks are decoded
        and resized once. Returns a PreparedItem or the InvalidInput per edit. An entry of
        `edits` that already is an InvalidInput (refused by the caller) passes through."""
        names = list(edit_names) if edit_names is not None else [f"edits[{j}]" for j in range(len(edits))]
        try:
            if not isinstance(instruction, str) or not instruction.strip():
                raise InvalidInput("instruction: must be a non-empty string")
            src = decode_image(source, source_name, self.config.max_pixels)
            if regions and all(isinstance(r, RegionInput) for r in regions) \
                    and all(r.mask.shape == src.shape[:2] for r in regions):
                regs = list(regions)  # already checked by normalize_regions (the server does)
            else:
                regs = normalize_regions(regions, src.shape[0], src.shape[1], self.config.max_regions)
            src_t = to_model_tensor(src, self.image_size)
            masks = resize_masks(np.stack([r.mask for r in regs]), self.image_size)
            meta = [region_meta(r) for r in regs]
        except InvalidInput as e:
            return [e for _ in edits]
        out: list[PreparedItem | InvalidInput] = []
        for j, edit in enumerate(edits):
            if isinstance(edit, InvalidInput):  # decoded (and refused) by the caller
                out.append(edit)
                continue
            try:
                ed = decode_image(edit, names[j], self.config.max_pixels)
                if ed.shape[:2] != src.shape[:2]:
                    # Regions are defined on the source; a different size cannot be aligned.
                    raise InvalidInput(f"{names[j]}: size {ed.shape[1]}x{ed.shape[0]} differs from "
                                       f"the source's {src.shape[1]}x{src.shape[0]}")
                out.append(PreparedItem(src_t, to_model_tensor(ed, self.image_size), instruction.strip(),
                                        masks, meta))
            except InvalidInput as e:
                out.append(e)
        return out

    # -- model calls (one thread at a time) ----------------------------------------------
    @torch.inference_mode()
    def score_prepared(self, items: Sequence[PreparedItem | InvalidInput]) -> list[ItemScore]:
        results: list[ItemScore | None] = [None] * len(items)
        todo = []
        for i, it in enumerate(items):
            if isinstance(it, InvalidInput):
                results[i] = ItemScore(valid=False, error=str(it), model_version=self.version)
            else:
                todo.append(i)
        bs = max(1, self.config.batch_size)
        for start in range(0, len(todo), bs):
            idx = todo[start:start + bs]
            try:
                scored = self._run([items[i] for i in idx])
            except Exception:
                # Isolate the item that breaks the call instead of losing the whole chunk.
                scored = []
                for i in idx:
                    try:
                        scored.extend(self._run([items[i]]))
                    except Exception as e:
                        scored.append(ItemScore(valid=False, error=f"model failed on this item "
                                                f"({type(e).__name__}: {e})", model_version=self.version))
            for i, s in zip(idx, scored):
                results[i] = s
        return results  # type: ignore[return-value]

    def _run(self, items: Sequence[PreparedItem]) -> list[ItemScore]:
        dev = self.device
        src = torch.stack([it.source for it in items]).to(dev)
        ed = torch.stack([it.edit for it in items]).to(dev)
        # Region kinds go to models whose predict takes them (the contract's optional `kinds`).
        extra = {"kinds": [[kind for _, kind, _, _ in it.regions] for it in items]} if _takes_kinds(self.model) else {}
        out = self.model.predict(src, ed, [it.instruction for it in items], [it.masks.to(dev) for it in items], **extra)
        region_image = out["region_image"].detach().cpu().numpy()
        ks = [len(it.regions) for it in items]
        if len(region_image) != sum(ks):
            raise RuntimeError(f"model returned {len(region_image)} region rows for {sum(ks)} regions")
        if not (region_image == np.repeat(np.arange(len(items)), ks)).all():
            raise RuntimeError("model output regions are not in input order (region_image mismatch)")
        # Whole columns checked and turned into Python floats at once: per-item numpy calls took
        # 1.5x as long for a batch of 32 (model thread time holding the GIL, not model work).
        cols = {k: out[k].detach().float().cpu().numpy() for k in _REGION_COLS + _ITEM_COLS}
        region_ok = np.isfinite(np.stack([cols[c] for c in _REGION_COLS])).all(0).tolist()
        item_ok = np.isfinite(np.stack([cols[c] for c in _ITEM_COLS])).all(0).tolist()
        succ, pres, succ_std, pres_std = (cols[c].tolist() for c in _REGION_COLS)
        nats, arts, ovrs = (cols[c].tolist() for c in _ITEM_COLS)
        scores = []
        offset = 0
        for b, it in enumerate(items):
            first, offset = offset, offset + ks[b]
            if not (item_ok[b] and all(region_ok[first:offset])):
                scores.append(ItemScore(valid=False, error="model produced non-finite scores for this item",
                                        model_version=self.version))
                continue
            nat, art = nats[b], arts[b]
            aes = min(nat, art)
            regs = []
            for j, (rid, kind, bbox, area) in enumerate(it.regions, start=first):
                s, p = succ[j], pres[j]
                phi = p if kind == "background" else min(s, p)
                regs.append(RegionScore(rid, kind, bbox, area, s, p, succ_std[j], pres_std[j], phi,
                                        region_reward(phi, aes)))
            scores.append(ItemScore(True, None, regs, nat, art, ovrs[b], aes, self.version))
        return scores

    # -- the public batch API ------------------------------------------------------------
    def score(self, sources: Sequence[Any], edits: Sequence[Any], instructions: Sequence[str] | str,
              regions: Sequence[Sequence[Any] | None] | None = None) -> list[ItemScore]:
        """Score B items. `sources`, `edits`: length B; `instructions`: length B (or one string for
        all); `regions`: per item a list of regions on its source (see `normalize_regions`), or
        None for whole-image scoring. Returns B ItemScores in input order."""
        n = len(edits)
        if len(sources) != n:
            raise ValueError(f"sources has {len(sources)} items but edits has {n}")
        instr = [instructions] * n if isinstance(instructions, str) else list(instructions)
        if len(instr) != n:
            raise ValueError(f"instructions has {len(instr)} items but edits has {n}")
        regs = [None] * n if regions is None else list(regions)
        if len(regs) != n:
            raise ValueError(f"regions has {len(regs)} items but edits has {n}")
        results: list[ItemScore] = []
        # Prepare chunk by chunk so memory stays bounded for very large batches.
        bs = max(1, self.config.batch_size)
        for start in range(0, n, bs):
            prepared = [self.prepare_group(sources[i], [edits[i]], instr[i], regs[i], f"sources[{i}]",
                                           [f"edits[{i}]"])[0]
                        for i in range(start, min(n, start + bs))]
            for i, r in enumerate(self.score_prepared(prepared), start=start):
                if not r.valid and r.error and not r.error.startswith(("sources[", "edits[")):
                    r.error = f"item {i}: {r.error}"
                results.append(r)
        return results


def propose_regions(source: np.ndarray, edits: Sequence[np.ndarray], config: Any = None) -> list | None:
    """Regions for a group, proposed once on its source by `sfreward.regions.propose_group`
    (uint8 [H, W, 3] images); None when no proposer is installed."""
    try:
        from sfreward.regions import propose_group
    except ImportError as e:
        # Only a missing proposer means "none installed"; a broken one must surface.
        if e.name == "sfreward.regions":
            return None
        raise
    if config is None:
        from sfreward.regions.base import ProposerConfig
        config = ProposerConfig()
    return propose_group(source, list(edits), config)


def _model_image_size(model: Any) -> int | tuple[int, int]:
    for holder in (model, getattr(model, "config", None)):
        size = getattr(holder, "image_size", None) if holder is not None else None
        if size is not None:
            return size if isinstance(size, int) else tuple(int(v) for v in size)
    raise ValueError("cannot tell the model's input size: model has no image_size / config.image_size; "
                     "pass image_size= to Scorer")


def _dir_version(path: Path) -> str:
    """name@sha256[:12] of the weights (and config) of a model directory."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("config.json")):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return f"{path.name}@{h.hexdigest()[:12]}"


def load(alias_or_path: str | os.PathLike, home: str | os.PathLike | None = None,
         device: str | None = None, config: ScorerConfig | None = None) -> Scorer:
    """A Scorer for a model directory, or a registry alias ('production', 'candidate') or model
    id resolved under <home>/models with its checksums verified."""
    from sfreward.model import SFRewardModel

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    p = Path(alias_or_path).expanduser()
    if p.is_dir():
        model = SFRewardModel.from_pretrained(p)   # checks the model card's sha256 when present
        version = _dir_version(p)
    elif os.sep in str(alias_or_path) or p.suffix:
        raise FileNotFoundError(f"model directory {p} does not exist")
    else:
        model, version = _load_from_registry(str(alias_or_path), home, dev)
    model = model.to(dev) if hasattr(model, "to") else model
    if hasattr(model, "eval"):
        model.eval()
    return Scorer(model, version, dev, config=config)


def _load_from_registry(ref: str, home: str | os.PathLike | None, device: str) -> tuple[Any, str]:
    """(model, model_id) for a registry alias or model id; the weights' sha256 is verified
    against the warehouse record before loading (sfreward.registry)."""
    from sfreward import registry
    from warehouse.workspace import Workspace

    ws = Workspace.open(home, create=False)
    model_id = registry.resolve(ws, ref)          # resolve once: the alias may move meanwhile
    return registry.load_model(ws, model_id, device=device), model_id
