"""Segment Anything: loading a local checkpoint once per process, batched image embeddings, and
prompting with a precomputed embedding.

Model types follow `segment_anything.sam_model_registry` (vit_h, vit_l, vit_b) plus `tiny`,
a genuine `Sam` of ~220k parameters (img_size 256) that tests and benchmarks build and save
locally: it loads through exactly the same code path as a real checkpoint.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import batched_nms
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.build_sam import build_sam_vit_b, build_sam_vit_h, build_sam_vit_l
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.amg import batched_mask_to_box, build_point_grid, calculate_stability_score
from segment_anything.utils.transforms import ResizeLongestSide

from sfreward.regions.base import ProposalError


class CheckpointError(RuntimeError):
    """A SAM checkpoint is missing, unreadable, or does not match the requested model type."""


def build_sam_tiny(checkpoint: None = None) -> Sam:
    """A tiny genuine SAM: ViT encoder (embed 64, depth 2, img_size 256, patch 16), prompt
    encoder and mask decoder of dim 32. Random weights unless loaded."""
    image_size, patch, dim = 256, 16, 32
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=2, embed_dim=64, img_size=image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=patch,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=[1], window_size=4, out_chans=dim),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size), mask_in_chans=8),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=3, iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


# Builders are called without a checkpoint; weights are loaded by `load_sam` so every model
# type shares one loading path with clear errors.
BUILDERS = {"vit_h": build_sam_vit_h, "vit_l": build_sam_vit_l, "vit_b": build_sam_vit_b,
            "tiny": build_sam_tiny}
# Image-encoder width per model type: identifies a checkpoint's type from its patch embedding.
ENCODER_DIMS = {"vit_h": 1280, "vit_l": 1024, "vit_b": 768, "tiny": 64}

_cache: dict[tuple, Sam] = {}
_cache_lock = threading.Lock()


def save_tiny_sam(path: str | Path, seed: int = 0) -> Path:
    """Build a tiny SAM with seeded random weights and save its state_dict (~1 MB) at `path`."""
    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_sam_tiny().state_dict(), path)
    return path


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ProposalError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def _read_state_dict(path: Path, model_type: str) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises OSError, RuntimeError, UnpicklingError, ... for bad files
        raise CheckpointError(
            f"SAM checkpoint {path} (expected model type {model_type}) cannot be read: it is "
            f"corrupt or not a PyTorch state_dict ({type(e).__name__}: {str(e)[:200]})") from e
    # Some exports wrap the state_dict.
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"SAM checkpoint {path} (expected model type {model_type}) does not hold a state_dict "
            "of tensors")
    return obj


def load_sam(checkpoint: str | Path, model_type: str, device: str = "auto") -> Sam:
    """Load a SAM from a local state_dict, once per process per (file, type, device).

    Raises CheckpointError naming the path and the expected model type when the file is
    missing, unreadable, or holds another model type's weights.
    """
    if model_type not in BUILDERS:
        raise CheckpointError(
            f"unknown SAM model type {model_type!r}; expected one of {', '.join(BUILDERS)}")
    path = Path(checkpoint).expanduser().resolve()
    if not path.is_file():
        raise CheckpointError(
            f"SAM checkpoint {path} (model type {model_type}) does not exist; download the "
            f"official sam_{model_type}_*.pth file or pass --checkpoint/--model-type")
    dev = resolve_device(device)
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size, model_type, str(dev))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        state = _read_state_dict(path, model_type)
        patch_w = state.get("image_encoder.patch_embed.proj.weight")
        if patch_w is not None and patch_w.shape[0] != ENCODER_DIMS[model_type]:
            found = [t for t, d in ENCODER_DIMS.items() if d == patch_w.shape[0]]
            raise CheckpointError(
                f"SAM checkpoint {path} does not match model type {model_type}: its image encoder "
                f"width is {patch_w.shape[0]}, expected {ENCODER_DIMS[model_type]}"
                + (f"; it looks like {found[0]}" if found else ""))
        sam = BUILDERS[model_type]()
        try:
            sam.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(
                f"SAM checkpoint {path} does not match model type {model_type}: "
                f"{str(e).splitlines()[0][:300]}") from e
        sam = sam.to(dev).eval()
        _cache[key] = sam
        return sam


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def patch_size(sam: Sam) -> int:
    return int(sam.image_encoder.patch_embed.proj.kernel_size[0])


@dataclass
class Embedding:
    """SAM image embedding of one image: features [1, C, h, w] plus the sizes SamPredictor needs."""

    features: torch.Tensor
    original_size: tuple[int, int]          # (H, W) of the image given
    input_size: tuple[int, int]             # (H, W) after ResizeLongestSide, before padding


@torch.no_grad()
def embed_images(sam: Sam, images: list[np.ndarray], batch_size: int = 4) -> list[Embedding]:
    """Run the image encoder on uint8 [H, W, 3] images, `batch_size` per call (images of
    different sizes batch fine: each is resized and padded to img_size x img_size)."""
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    out: list[Embedding] = []
    for start in range(0, len(images), max(1, batch_size)):
        chunk = images[start:start + max(1, batch_size)]
        batch, sizes = [], []
        for img in chunk:
            x = torch.as_tensor(transform.apply_image(img), device=sam.device)
            x = x.permute(2, 0, 1).contiguous()[None]
            sizes.append((tuple(img.shape[:2]), tuple(x.shape[-2:])))
            batch.append(sam.preprocess(x))
        feats = sam.image_encoder(torch.cat(batch))
        for i, (orig, inp) in enumerate(sizes):
            out.append(Embedding(feats[i:i + 1], orig, inp))
    return out


class _EmbeddedPredictor(SamPredictor):
    """A SamPredictor whose image embedding was computed elsewhere (batched, or shared by a
    group); `set_image` installs it instead of re-running the encoder."""

    def __init__(self, sam: Sam, emb: Embedding):
        super().__init__(sam)
        self._emb = emb
        self._install()

    def _install(self) -> None:
        self.features = self._emb.features
        self.original_size = self._emb.original_size
        self.input_size = self._emb.input_size
        self.is_image_set = True

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        if tuple(image.shape[:2]) != self._emb.original_size:
            raise ProposalError(
                f"image {image.shape[:2]} does not match its embedding {self._emb.original_size}")
        self._install()


@torch.no_grad()
def predict_prompts(sam: Sam, emb: Embedding, boxes: np.ndarray, points: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One mask per prompt, all prompts in one decoder call.

    boxes: [N, 4] x1, y1, x2, y2 pixels; points: [N, 2] x, y positive points (same image).
    Returns masks bool [N, H, W], predicted IoU [N], stability score [N].
    """
    pred = _EmbeddedPredictor(sam, emb)
    dev = sam.device
    b = torch.as_tensor(pred.transform.apply_boxes(boxes, emb.original_size), dtype=torch.float, device=dev)
    p = pred.transform.apply_coords(points[:, None, :].astype(np.float64), emb.original_size)
    p = torch.as_tensor(p, dtype=torch.float, device=dev)
    labels = torch.ones(p.shape[:2], dtype=torch.int, device=dev)
    logits, iou, _ = pred.predict_torch(p, labels, boxes=b, multimask_output=False, return_logits=True)
    logits, iou = logits[:, 0], iou[:, 0]
    stability = calculate_stability_score(logits, sam.mask_threshold, 1.0)
    masks = (logits > sam.mask_threshold).cpu().numpy()
    return masks, iou.float().cpu().numpy(), stability.float().cpu().numpy()


def automatic_masks(sam: Sam, image: np.ndarray, emb: Embedding, points_per_side: int = 16,
                    points_per_batch: int = 64, pred_iou_thresh: float = 0.86,
                    stability_score_thresh: float = 0.92) -> list[dict]:
    """SamAutomaticMaskGenerator on `image` (uint8 [H, W, 3]) reusing its embedding. Returns
    the generator's records (segmentation bool [H, W], predicted_iou, stability_score, ...)."""
    amg = SamAutomaticMaskGenerator(
        sam, points_per_side=points_per_side, points_per_batch=points_per_batch,
        pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
        crop_n_layers=0, output_mode="binary_mask")
    amg.predictor = _EmbeddedPredictor(sam, emb)
    return amg.generate(image)


@torch.no_grad()
def grid_masks(sam: Sam, emb: Embedding, points_per_side: int = 16, points_per_batch: int = 64,
               pred_iou_thresh: float = 0.86, stability_score_thresh: float = 0.92,
               box_nms_thresh: float = 0.7) -> list[dict]:
    """Whole-image masks from a grid of point prompts, filtered like SamAutomaticMaskGenerator
    (predicted IoU, stability score, box NMS; one crop layer) but at the decoder's low
    resolution: only surviving masks are upsampled to full size, and nothing goes through
    Python RLE. Returns records {segmentation: bool [H, W], predicted_iou, stability_score,
    area}, highest predicted IoU first.
    """
    h, w = emb.original_size
    dev = sam.device
    grid = build_point_grid(points_per_side) * np.array([w, h], dtype=np.float64)  # [P, 2] x, y
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    size = sam.image_encoder.img_size
    pe = sam.prompt_encoder.get_dense_pe()
    kept_low, kept_iou, kept_stab = [], [], []
    for start in range(0, len(grid), max(1, points_per_batch)):
        pts = transform.apply_coords(grid[start:start + points_per_batch], (h, w))
        p = torch.as_tensor(pts, dtype=torch.float, device=dev)[:, None, :]
        labels = torch.ones(p.shape[:2], dtype=torch.int, device=dev)
        sparse, dense = sam.prompt_encoder(points=(p, labels), boxes=None, masks=None)
        low, iou = sam.mask_decoder(image_embeddings=emb.features, image_pe=pe,
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=True)
        low, iou = low.flatten(0, 1), iou.flatten()
        # Low-res logits cover the padded square input; score only the valid part.
        n = low.shape[-1]
        vh = max(1, math.ceil(emb.input_size[0] * n / size))
        vw = max(1, math.ceil(emb.input_size[1] * n / size))
        stab = calculate_stability_score(low[:, :vh, :vw], sam.mask_threshold, 1.0)
        keep = (iou > pred_iou_thresh) & (stab >= stability_score_thresh)
        keep &= (low[:, :vh, :vw] > sam.mask_threshold).flatten(1).any(1)
        kept_low.append(low[keep])
        kept_iou.append(iou[keep])
        kept_stab.append(stab[keep])
    low, iou, stab = torch.cat(kept_low), torch.cat(kept_iou), torch.cat(kept_stab)
    if len(low) == 0:
        return []
    boxes = batched_mask_to_box(low > sam.mask_threshold).float()
    order = batched_nms(boxes, iou, torch.zeros(len(boxes), device=boxes.device), box_nms_thresh)
    out = []
    for start in range(0, len(order), 32):
        idx = order[start:start + 32]
        masks = sam.postprocess_masks(low[idx][:, None], emb.input_size, emb.original_size)[:, 0]
        masks = (masks > sam.mask_threshold).cpu().numpy()
        for j, k in enumerate(idx.tolist()):
            if masks[j].any():
                out.append({"segmentation": masks[j], "predicted_iou": float(iou[k]),
                            "stability_score": float(stab[k]), "area": int(masks[j].sum())})
    return out
