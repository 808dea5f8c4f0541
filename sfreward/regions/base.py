"""Shared types of the region proposers: the configuration, a proposed `Region`, and input checks.

Images are numpy uint8 arrays [H, W, 3] (RGB, 0..255); masks are bool [H, W] on the source
image's pixel grid; boxes are [x1, y1, x2, y2] in pixels with x2/y2 exclusive.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from warehouse.masks import bbox_xyxy as bbox_of  # noqa: F401  (re-exported)

KINDS = ("edit", "context", "background")
# 'provided': an edit mask that came with the data (warehouse.sources), used as is.
PROPOSED_ON = ("source", "edited", "both", "derived", "provided")
# Smallest image side any proposer accepts; SAM's ViT patch is 16 px, so a smaller image has
# less than one patch of real content.
MIN_SIDE = 16


class ProposalError(ValueError):
    """Bad input to a proposer (wrong shape/dtype, too small, ...): the message names the input."""


@dataclass
class ProposerConfig:
    """Everything that determines a region set. `model_type=None` selects the classical
    (weight-free) proposer; otherwise SAM with `checkpoint` (a local file)."""

    # Fields with help text are the ones the CLI and Dagster expose (pipelines/configs.py).
    name: str = field(default="default", metadata={"help": "config name recorded with the region sets"})
    model_type: str | None = field(default=None, metadata={
        "help": "SAM model type of the checkpoint; none: the classical (weight-free) proposer",
        "choices": ("vit_h", "vit_l", "vit_b", "tiny")})
    checkpoint: str | None = field(default=None, metadata={"help": "local SAM checkpoint (a state_dict file)"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present), cpu, cuda, cuda:1, ..."})
    # Change map (CIELAB distance, in delta-E units).
    change_threshold: float = 12.0         # absolute floor of the delta-E threshold
    change_noise_k: float = 4.0            # threshold >= median + k * robust sigma of delta-E
    change_sigma: float = 1.0              # Gaussian denoising of the Lab images, pixels
    change_work_side: int = 384            # change map computed at most at this long side
    # Post-processing.
    min_area_frac: float = field(default=0.002, metadata={
        "help": "drop regions smaller than this fraction of the image"})
    nms_iou: float = field(default=0.7, metadata={
        "help": "mask IoU above which the lower-priority region drops"})
    # Every region costs annotator clicks (4 + background; it was 12: see
    # benchmarks/results/annotator.md).
    max_regions: int = field(default=4, metadata={
        "help": "cap on non-background regions per set (edit regions first, then the largest context regions)"})
    fragment_gap_frac: float = 0.03        # change components closer than this x long side merge
    sliver_px: int = 2                     # a change component no deeper than this is a sliver
    # Split a group's change components by which rollouts changed each part (changemap.
    # split_by_rollouts): an edit and a neighbour damaged by only some rollouts are two regions.
    rollout_split: bool = True
    rollout_split_share: float = 0.1       # smallest part, as a share of its change component
    edit_min_cover: float = 0.3            # SAM edit mask must cover this much of its change
    # SAM.
    context_generator: str = "grid"        # 'grid' (low-res filtered point grid) | 'amg'
    points_per_side: int = field(default=16, metadata={
        "help": "SAM point grid per side for context regions"})
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.86
    stability_score_thresh: float = 0.92
    encoder_batch_size: int = 4            # images per image-encoder call
    group_edited_prompts: int = 2          # rollouts per group whose edited image SAM also sees
    # Classical proposer.
    segmenter: str = "felzenszwalb"        # 'felzenszwalb' | 'slic'
    felzenszwalb_scale: float = 300.0
    slic_n_segments: int = 24
    classical_work_side: int = 256         # segmentation computed at most at this long side
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model_type in ("", "none", "classical"):
            self.model_type = None
        if self.checkpoint == "":
            self.checkpoint = None
        if self.model_type is not None and self.model_type not in ("vit_h", "vit_l", "vit_b", "tiny"):
            raise ProposalError(
                f"model_type {self.model_type!r} is not one of vit_h, vit_l, vit_b, tiny "
                "(or None for the classical proposer)")
        if self.model_type is not None and self.checkpoint is None:
            raise ProposalError(f"model_type {self.model_type!r} needs a checkpoint path")
        if self.model_type is None and self.checkpoint is not None:
            raise ProposalError(
                f"checkpoint {self.checkpoint} given without a model_type (vit_h, vit_l, vit_b, tiny)")
        if self.context_generator not in ("grid", "amg"):
            raise ProposalError(f"context_generator {self.context_generator!r} is not 'grid' or 'amg'")
        if self.segmenter not in ("felzenszwalb", "slic"):
            raise ProposalError(f"segmenter {self.segmenter!r} is not 'felzenszwalb' or 'slic'")
        if not 0 < self.nms_iou <= 1:
            raise ProposalError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.max_regions < 0:
            raise ProposalError(f"max_regions must be >= 0, got {self.max_regions}")
        if not 0 <= self.rollout_split_share < 1:
            raise ProposalError(f"rollout_split_share must be in [0, 1), got {self.rollout_split_share}")

    @property
    def proposer(self) -> str:
        """'sam:<model_type>' or 'classical' (stored with every region set)."""
        return f"sam:{self.model_type}" if self.model_type else "classical"

    def canonical(self) -> dict:
        """The fields that determine the output. The device does not (same weights, same
        result up to float noise); the checkpoint counts by file name, so moving the weights
        to another directory keeps the hash (SAM release files carry a content suffix). Fields
        added later leave the hash while they hold the behaviour from before they existed, so
        region sets and models recorded earlier keep their hashes."""
        d = asdict(self)
        d.pop("device")
        if not d["rollout_split"]:  # added later; off, it and its setting change nothing
            d.pop("rollout_split")
            d.pop("rollout_split_share")
        if d["checkpoint"] is not None:
            d["checkpoint"] = Path(d["checkpoint"]).name
        return d

    def config_hash(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ProposerConfig":
        """Settings a user gives: unset fields take today's defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ProposalError(f"unknown proposer config keys: {unknown}")
        return cls(**d)

    @classmethod
    def from_record(cls, d: dict) -> "ProposerConfig":
        """A config recorded with a region set or a model: fields it lacks were added later and
        take the behaviour from before they existed, so it proposes as it did when recorded."""
        return cls.from_dict({"rollout_split": False, **d})


@dataclass
class Region:
    """One proposed region. `mask` is bool [H, W] on the source grid."""

    kind: str                               # 'edit' | 'context' | 'background'
    mask: np.ndarray
    bbox: tuple[int, int, int, int]         # x1, y1, x2, y2 (exclusive)
    area: int                               # pixels
    proposed_on: str                        # 'source' | 'edited' | 'both' | 'derived' | 'provided'
    proposer: str                           # 'sam:vit_b', 'classical', ...
    config_hash: str
    predicted_iou: float | None = None      # SAM's own quality estimate
    stability_score: float | None = None
    change_fraction: float | None = None    # fraction of the region inside the change map
    region_id: str | None = None            # set once stored

    def to_record(self) -> dict:
        """JSON-able form (the dataset export's region fields): mask as COCO RLE, bbox as
        [x1, y1, x2, y2] exclusive."""
        from warehouse.masks import encode

        return {"region_id": self.region_id, "kind": self.kind, "mask": encode(self.mask),
                "bbox": list(self.bbox), "area": self.area, "proposed_on": self.proposed_on,
                "proposer": self.proposer, "config_hash": self.config_hash,
                "predicted_iou": self.predicted_iou, "stability_score": self.stability_score,
                "change_fraction": self.change_fraction}


def stack_masks(regions: list[Region]) -> np.ndarray:
    """Masks of a region set as bool [K, H, W] (background included, last), the layout the
    reward model and credit assignment take."""
    return np.stack([r.mask for r in regions])


@dataclass
class Candidate:
    """A mask before post-processing (NMS, caps, background)."""

    kind: str
    mask: np.ndarray
    proposed_on: str
    score: float                            # priority within its kind (higher first)
    predicted_iou: float | None = None
    stability_score: float | None = None


def check_image(image: np.ndarray, what: str) -> np.ndarray:
    """Validate an RGB image: uint8 [H, W, 3] with both sides >= MIN_SIDE. Returns it contiguous."""
    if not isinstance(image, np.ndarray):
        raise ProposalError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ProposalError(f"{what} must be RGB [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ProposalError(f"{what} must be uint8 0..255, got dtype {image.dtype}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ProposalError(
            f"{what} is {w}x{h} px, smaller than the {MIN_SIDE} px minimum side "
            "(the SAM patch size); upsample it or drop the sample")
    return np.ascontiguousarray(image)
