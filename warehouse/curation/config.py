"""The curation configuration. Part of a dataset version's identity: the version id hashes the
rows together with this config, so two builds with different configs never share an id."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from warehouse.scale import LABEL_SCALE

SPLITS = ("train", "validation", "test")
IMAGE_DIMS = ("overall", "naturalness", "artifacts")
ANNOTATION_SOURCES = ("sync", "imported")   # annotations.source (migration 008)
REGION_DIMS = ("success", "preserve")
SPLIT_LINKINGS = ("auto", "sha256", "perceptual")
DEFAULT_RATINGS = ("count", "ignore")   # CurationConfig.default_ratings
PERCEPTUAL_LINKING = "dhash-dihedral-crops-v1"   # filters.source_hashes; a new method = a new scheme


@dataclass
class CurationConfig:
    # Fields with help text are `sfr dataset build` flags (pipelines/configs.py); --set takes any.
    name: str = field(default="sfreward", metadata={"help": "dataset name"})
    # Which annotations count (empty = every project).
    project_keys: list[str] = field(default_factory=list)
    # ... and from which sources: 'sync' (live Label Studio), 'imported' (`sfr annotate import`);
    # empty = both.
    annotation_sources: list[str] = field(default_factory=list)
    # Aggregate statistic exported as the score: 'median' (ordinal; ties interpolate, e.g.
    # ratings 3 and 4 give 3.5) or 'mean'. Score = stars_to_reward(statistic), on 0..25.
    score_stat: str = "median"
    # Ratings filled from a recorded default rather than clicked (migration 010: region
    # success_default / preserve_default / verdict_default, the image's artifacts_default; e.g.
    # "everything outside the edit preserved? yes" fills context/background preserve = 5):
    # 'count' (a default counts like a clicked rating) or 'ignore' (a default is a missing
    # rating: left out of counts, means, medians, stds, verdict votes and agreement; an
    # annotation whose artifacts was defaulted is incomplete; a region rated only by default is
    # unrated and dropped, one dimension rated only by default exports NaN). Left out of the
    # hash at 'count', so datasets built before the field keep their ids.
    default_ratings: str = field(default="count", metadata={
        "help": "ratings filled from a recorded default (e.g. 'outside the edit preserved? yes'): "
                "'count' like clicked ones (the default) or 'ignore' as missing", "metavar": "{count,ignore}"})
    # The star -> reward mapping (warehouse/scale.py). Part of the config hash, so datasets
    # built with a new mapping are new versions; only the current one can be built.
    label_scale: str = LABEL_SCALE
    # Filters (ratings in stars 1..5, areas in pixels).
    min_annotators: int = 1            # complete annotations (overall, naturalness, artifacts)
    min_region_area: int = 64          # non-background regions below this are dropped
    max_item_std: float = 1.25         # population std of a sample's overall ratings
    max_region_std: float = 1.25       # population std of a region's success or preserve
    dedupe_hamming: int = 4            # dHash Hamming distance counted as near-duplicate; -1 off
    include_gold: bool = True
    # Annotator quality (see agreement.py).
    exclude_flagged_annotators: bool = False
    gold_floor: float = 0.7            # share of gold ratings within 1 star
    min_gold: int = 3
    others_floor: float = 0.5          # share of ratings within 1 star of the others' mean
    min_shared: int = 10
    alpha_floor: float = 0.2           # asset check: every dimension's alpha at least this
    # Splits.
    seed: int = field(default=0, metadata={"help": "split seed"})
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)   # train, validation, test
    # How samples are linked into split components (splits.py): 'sha256' (same source/edited
    # bytes, or group: the original scheme), 'perceptual' (also sources that are near-duplicates
    # under flips, 90-degree rotations, crops, resizes, re-encodes), or 'auto': a workspace that
    # already has 'sha256' assignments for this seed and fractions and none of 'perceptual' keeps
    # 'sha256' (its splits never move) until it opts in with split_linking='perceptual'; any other
    # workspace gets 'perceptual'. build_dataset records the resolved value.
    split_linking: str = "auto"
    source_hamming: int = 10           # dihedral-min dHash distance linking two sources (perceptual)
    license: str = "CC-BY-4.0"

    def __post_init__(self) -> None:
        self.fractions = tuple(float(f) for f in self.fractions)  # JSON gives lists
        if self.score_stat not in ("median", "mean"):
            raise ValueError(f"CurationConfig.score_stat must be 'median' or 'mean', got {self.score_stat!r}")
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"CurationConfig.fractions must be 3 non-negative numbers summing to 1, got {self.fractions}")
        bad = sorted(set(self.annotation_sources) - set(ANNOTATION_SOURCES))
        if bad:
            raise ValueError(f"CurationConfig.annotation_sources {bad} unknown; use any of {list(ANNOTATION_SOURCES)}")
        if self.label_scale != LABEL_SCALE:
            raise ValueError(f"CurationConfig.label_scale: only the current scale {LABEL_SCALE!r} can be built "
                             f"(got {self.label_scale!r}); existing versions keep theirs")
        if self.default_ratings not in DEFAULT_RATINGS:
            raise ValueError(f"CurationConfig.default_ratings must be one of {DEFAULT_RATINGS} ('count': a "
                             f"default-filled rating counts as given; 'ignore': it counts as missing), "
                             f"got {self.default_ratings!r}")
        if self.split_linking not in SPLIT_LINKINGS:
            raise ValueError(f"CurationConfig.split_linking must be one of {SPLIT_LINKINGS}, got {self.split_linking!r}")
        if self.min_annotators < 1:
            raise ValueError(f"CurationConfig.min_annotators must be >= 1, got {self.min_annotators}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["fractions"] = list(self.fractions)
        d["project_keys"] = sorted(self.project_keys)
        d["annotation_sources"] = sorted(self.annotation_sources)
        if not d["annotation_sources"]:  # the default: configs from before the field keep their hash
            del d["annotation_sources"]
        if d["default_ratings"] == "count":  # likewise: today's behaviour keeps today's ids
            del d["default_ratings"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def split_scheme(self, linking: str | None = None) -> str:
        """Split assignments are shared by every config with the same seed, fractions and linking
        (the 'sha256' scheme keeps its original name, so existing assignments stay valid)."""
        linking = linking or self.split_linking
        if linking == "auto":
            raise ValueError("split_scheme: resolve split_linking='auto' first (splits.resolve_linking)")
        key = {"seed": self.seed, "fractions": list(self.fractions)}
        if linking == "perceptual":
            key |= {"linking": PERCEPTUAL_LINKING, "source_hamming": self.source_hamming}
        return "s" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CurationConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown curation config keys {unknown}; known: {sorted(known)}")
        return cls(**d)
