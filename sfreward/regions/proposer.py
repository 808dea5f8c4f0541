"""Edit-guided region proposals for one GRPO group (or one sample = a group of one).

Pipeline: change maps of every rollout against the shared source -> union -> connected
components (fragments of one change merged) -> each split by which rollouts changed its parts,
voted per source segment (an edit made by most rollouts and a neighbour damaged by some become
two regions) -> edit candidates (SAM box+point prompts on the source AND on the edited images,
or segments snapped to the change for the classical proposer) -> context candidates (SAM's
automatic mask generator on the source, or image segments) -> post-processing (min area,
mask-IoU NMS with edits first, cap) -> one background region = complement of the union.

Provided masks (edit masks that came with the data, e.g. MagicBrush's `mask_img`) are edit
regions as they are (`proposed_on='provided'`), ranked before every other candidate and kept
whatever their size; change-map components they already explain are not prompted again, the
rest of the change still is (an edit can spill outside its mask).

Cost for a group of G rollouts with SAM: one source embedding, `group_edited_prompts` edited
embeddings (batched), one automatic-mask pass; independent of G apart from the cheap change maps.
"""
from __future__ import annotations

import logging
import math

import numpy as np
from pycocotools import mask as coco_mask

from sfreward.regions import classical
from sfreward.regions import sam as samlib
from sfreward.regions.base import Candidate, ProposalError, ProposerConfig, Region, bbox_of, check_image
from sfreward.regions.changemap import (change_map, components, match_size, merge_fragments, prompt_for,
                                        split_by_rollouts, to_lab)

log = logging.getLogger(__name__)


def _rle(mask: np.ndarray) -> dict:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))


def postprocess(candidates: list[Candidate], shape: tuple[int, int], change: np.ndarray | None,
                config: ProposerConfig) -> list[Region]:
    """Candidates -> final regions: drop masks under `min_area_frac`, greedy mask-IoU NMS in
    priority order (edit before context, then by score), cap at `max_regions`, and append the
    background (complement of the union). Context regions are dropped, lowest priority first,
    while the background would be smaller than the minimum area, so the background is empty
    only when edit regions alone cover the image. Regions + background cover every pixel.
    """
    h, w = shape
    min_px = max(1, math.ceil(config.min_area_frac * h * w))
    order = sorted((c for c in candidates if int(c.mask.sum()) >= min_px or c.proposed_on == "provided"),
                   key=lambda c: (c.kind != "edit", c.proposed_on != "provided", -c.score))
    kept: list[Candidate] = []
    rles: list[dict] = []
    for c in order:
        if len(kept) >= config.max_regions:
            break
        rle = _rle(c.mask)
        if rles:
            ious = coco_mask.iou([rle], rles, [0] * len(rles))[0]
            j = int(np.argmax(ious))
            if ious[j] >= config.nms_iou:
                # The same object found on both images: one region, marked as such.
                if kept[j].kind == c.kind and {kept[j].proposed_on, c.proposed_on} == {"source", "edited"}:
                    kept[j].proposed_on = "both"
                continue
        kept.append(c)
        rles.append(rle)

    def union_of(cs: list[Candidate]) -> np.ndarray:
        u = np.zeros(shape, dtype=bool)
        for c in cs:
            u |= c.mask
        return u

    union = union_of(kept)
    while (h * w - int(union.sum())) < min_px and any(c.kind == "context" for c in kept):
        last = max(i for i, c in enumerate(kept) if c.kind == "context")
        kept.pop(last)
        union = union_of(kept)

    proposer, chash = config.proposer, config.config_hash()

    def region(kind, mask, on, piou=None, stab=None) -> Region:
        area = int(mask.sum())
        frac = None if change is None or area == 0 else float((mask & change).sum() / area)
        return Region(kind=kind, mask=mask, bbox=bbox_of(mask), area=area, proposed_on=on,
                      proposer=proposer, config_hash=chash, predicted_iou=piou,
                      stability_score=stab, change_fraction=frac)

    out = [region(c.kind, c.mask, c.proposed_on, c.predicted_iou, c.stability_score) for c in kept]
    out.append(region("background", ~union, "derived"))
    return out


class Proposer:
    """Proposes regions with one configuration; the SAM model (if any) is loaded on first use
    and shared through `sam.load_sam`'s per-process cache."""

    def __init__(self, config: ProposerConfig):
        self.config = config

    @property
    def sam(self):
        c = self.config
        return samlib.load_sam(c.checkpoint, c.model_type, c.device)

    def change_maps(self, source: np.ndarray, edits: list[np.ndarray]) -> list[np.ndarray]:
        c = self.config
        src_lab = to_lab(source, c.change_sigma, c.change_work_side)  # once per group
        return [change_map(source, e, threshold=c.change_threshold, noise_k=c.change_noise_k,
                           sigma=c.change_sigma, work_side=c.change_work_side,
                           min_area_frac=c.min_area_frac, source_lab=src_lab) for e in edits]

    def propose_group(self, source: np.ndarray, edits: list[np.ndarray],
                      provided: list[np.ndarray] | None = None) -> list[Region]:
        """Regions for a group: source uint8 [H, W, 3]; edits: the group's edited images
        (uint8 [h, w, 3], resized to the source size if needed); provided: edit masks that came
        with the data, bool [H, W] on the source grid. Masks are bool [H, W] on the source grid;
        the last region is the background."""
        c = self.config
        source = check_image(source, "source image")
        if len(edits) == 0:
            raise ProposalError("a group needs at least one edited image, got none")
        edits = [match_size(check_image(e, f"edited image {i}"), source.shape[:2])
                 for i, e in enumerate(edits)]
        maps = self.change_maps(source, edits)
        union = np.logical_or.reduce(maps)
        min_px = max(1, math.ceil(c.min_area_frac * union.size))
        # Largest changes first; more than max_regions could never all be kept anyway, and a
        # global restyle can shatter into hundreds of components (memory: one mask each).
        comps = components(union, min_area=min_px)[:max(1, 8 * c.max_regions)]
        comps = merge_fragments(comps, round(c.fragment_gap_frac * max(union.shape)), c.sliver_px)
        # Image segments of the source: the classical proposer's regions, and the units the
        # split by rollouts votes over (cheap: computed at classical_work_side).
        split = c.rollout_split and len(edits) > 1
        labels = classical.segment(source, c) if (c.model_type is None or split) else None
        if split:
            comps = sorted((part for comp in comps[:max(1, c.max_regions)]
                            for part in split_by_rollouts(comp, maps, labels, min_px, c.sliver_px,
                                                          c.rollout_split_share)),
                           key=lambda m: -int(m.sum()))
        comps = comps[:max(1, c.max_regions)]
        given = _provided_candidates(provided or [], source.shape[:2])
        if given:  # changes a provided mask already explains need no region of their own
            covered = np.logical_or.reduce([g.mask for g in given])
            comps = [m for m in comps if (m & covered).sum() < c.edit_min_cover * m.sum()]
        if c.model_type is None:
            cands = classical.edit_candidates(comps, labels)
            cands += classical.context_candidates(labels, limit=3 * max(1, c.max_regions))
        else:
            cands = self._sam_candidates(source, edits, maps, comps)
        return postprocess(given + cands, source.shape[:2], union, c)

    def _sam_candidates(self, source, edits, maps, comps) -> list[Candidate]:
        c = self.config
        sam = self.sam
        ps = samlib.patch_size(sam)
        if min(source.shape[:2]) < ps:
            raise ProposalError(
                f"source image {source.shape[1]}x{source.shape[0]} is smaller than the SAM patch "
                f"size {ps} px")
        # The rollouts that changed the most pixels carry the clearest view of the edit.
        chosen = sorted(range(len(edits)), key=lambda i: -int(maps[i].sum()))
        chosen = chosen[:c.group_edited_prompts] if comps else []
        embs = samlib.embed_images(sam, [source] + [edits[i] for i in chosen], c.encoder_batch_size)
        cands: list[Candidate] = []
        if comps:
            prompts = [prompt_for(comp) for comp in comps]
            boxes = np.stack([b for b, _ in prompts])
            points = np.stack([p for _, p in prompts])
            best: list[Candidate | None] = [None] * len(comps)
            for emb, on in [(embs[0], "source")] + [(e, "edited") for e in embs[1:]]:
                masks, iou, stab = samlib.predict_prompts(sam, emb, boxes, points)
                for k, comp in enumerate(comps):
                    m = masks[k]
                    inter = int((m & comp).sum())
                    # The mask must both explain its change and be explained by it.
                    if inter < c.edit_min_cover * comp.sum() or inter < c.edit_min_cover * m.sum():
                        continue
                    score = float(comp.sum()) + float(iou[k])
                    cand = Candidate("edit", m, on, score, float(iou[k]), float(stab[k]))
                    cands.append(cand)
                    best[k] = cand
            for k, comp in enumerate(comps):
                if best[k] is None:  # SAM found nothing that fits: keep the change itself
                    cands.append(Candidate("edit", comp, "derived", float(comp.sum())))
        generate = samlib.grid_masks if c.context_generator == "grid" else (
            lambda sam, emb, **kw: samlib.automatic_masks(sam, source, emb, **kw))
        records = generate(
            sam, embs[0], points_per_side=c.points_per_side,
            points_per_batch=c.points_per_batch, pred_iou_thresh=c.pred_iou_thresh,
            stability_score_thresh=c.stability_score_thresh)
        total = source.shape[0] * source.shape[1]
        for r in records:
            # Prefer large, confident regions: annotators rate objects, not fragments.
            score = math.sqrt(r["area"] / total) * float(r["predicted_iou"])
            cands.append(Candidate("context", r["segmentation"], "source", score,
                                   float(r["predicted_iou"]), float(r["stability_score"])))
        return cands


def _provided_candidates(provided: list[np.ndarray], shape: tuple[int, int]) -> list[Candidate]:
    out = []
    for i, m in enumerate(provided):
        m = np.asarray(m, dtype=bool)
        if m.shape != tuple(shape):
            raise ProposalError(f"provided mask {i} is {m.shape[1]}x{m.shape[0]}, the source is "
                                f"{shape[1]}x{shape[0]}; provided masks live on the source grid")
        if m.any():  # larger masks first among the provided ones
            out.append(Candidate("edit", m, "provided", float(m.sum())))
    return out


def propose_group(source: np.ndarray, edits: list[np.ndarray], config: ProposerConfig,
                  provided: list[np.ndarray] | None = None) -> list[Region]:
    """Online entry point (reward server): regions for one group, no warehouse involved."""
    return Proposer(config).propose_group(source, edits, provided)


def propose_sample(source: np.ndarray, edited: np.ndarray, config: ProposerConfig) -> list[Region]:
    """Regions for a single sample (a group of one)."""
    return Proposer(config).propose_group(source, [edited])
