"""SFReward: a region-aware reward model for image edits.

One forward pass scores every region of a batch of (source, edited, instruction) triples:

1. The shared vision backbone turns source and edited images into patch-token grids
   [B, g, g, D]; per-token features are (edited, source, edited - source) plus optional
   pixel-difference statistics, projected to `hidden`.
2. Each region's mask is average-pooled onto the patch grid (coverage fraction of every
   patch), and region features are the coverage-weighted mean of the tokens of its image.
   Regions of all images are packed into one tensor with an index `region_image` (no Python
   loop over regions). Added to it: an embedding of the region's kind (edit / context /
   background, when given) and an MLP of the region's own pixel statistics
   (region_pixel_stats: change, high-frequency energy and colour over exactly its pixels).
3. Heads: per region success/preserve mean and log-variance; per image naturalness and
   artifacts; overall = softmax(region logits within the image)-weighted phi_r with
   phi_r = min(success, preserve), preserve alone for the background. The background is each
   image's last region (the region convention of warehouse/regions puts it last); its
   preserve score is also returned as `background`.

`forward` works in normalized units (0..1); `predict` returns the 0..25 scale of the
interface contract (docs/architecture.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from sfreward.model import pretrained
from sfreward.model.backbone import HashingTextEncoder, VisionBackbone, freeze_unused
from sfreward.model.config import SFRewardConfig
from sfreward.model.grounding import (N_COMPLETION, N_GROUNDING, N_INTENT, grounding_features,
                                      region_geometry, target_hue_maps)
from sfreward.model.regionstats import (  # noqa: F401 (blur3x3, N_REGION_STATS: re-exported)
    N_DAMAGE_STATS, N_REGION_STATS, N_SMALL_STATS, N_STRUCTURE_STATS, blur3x3, pixel_stats, pool_regions,
    region_pixel_stats)
from sfreward.model.pretrained import CheckpointError, sha256_file  # noqa: F401 (re-exported)
from sfreward.model.text import TOKENIZER_DIR, TransformerTextEncoder

from warehouse.scale import REWARD_MAX  # noqa: E402  (the one label scale)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "model_card.json"
LOGVAR_MIN, LOGVAR_MAX = -9.0, 2.0
# Region kinds (docs/architecture.md, "Region kinds") as ids of the kind embedding; 0 = not given.
KIND_IDS = {"edit": 1, "context": 2, "background": 3}
# Absent from models saved before them: loaded with the zero initialisation (no effect).
OPTIONAL_KEYS = ("kind_emb.weight", "region_stats.0.weight", "region_stats.0.bias", "region_stats.2.weight",
                 "region_stats.2.bias")


def kind_ids(kinds: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """Region kind names -> long ids [R] (unknown or empty -> 0)."""
    return torch.tensor([KIND_IDS.get(k, 0) for k in kinds], dtype=torch.long, device=device)


class ArtifactError(RuntimeError):
    """A model directory is missing files or its weights do not match the recorded sha256."""


def _mlp(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(d_hidden, d_out))


def segment_softmax(logits: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of logits [R] within each segment given by index [R] in [0, n)."""
    mx = torch.full((n,), float("-inf"), dtype=logits.dtype, device=logits.device)
    mx = mx.scatter_reduce(0, index, logits, reduce="amax", include_self=True)
    e = torch.exp(logits - mx[index])
    den = torch.zeros(n, dtype=logits.dtype, device=logits.device).index_add(0, index, e)
    return e / den[index]


def _load_pretrained(config: SFRewardConfig):
    """Load the pretrained towers `config` names (backbone_path, text_path) and resolve the
    config in place: backbone family, pixel stats, text encoder kind, lineage records.
    Returns (vision net or None, text net or None, tokenizer folder or None)."""
    vision = text = text_dir = None
    if config.backbone_path:
        ck = pretrained.inspect(config.backbone_path, "backbone")
        config.backbone = ck.family
        if config.text_encoder == "checkpoint" and not ck.full and not config.text_path:
            raise CheckpointError(
                f"pretrained folder {ck.path}: text_encoder='checkpoint' but this {ck.model_type} folder has "
                "no text tower; use a SiglipModel/CLIPModel folder, model.text_path, or text_encoder=hash")
        want_text = ck.full and not config.text_path and config.text_encoder in ("auto", "checkpoint")
        if want_text and not ck.has_tokenizer():
            raise CheckpointError(
                f"pretrained folder {ck.path}: it has a text tower ({ck.model_type}) but no tokenizer "
                f"(none of {', '.join(pretrained.TOKENIZER_NAMES)}); copy the checkpoint's tokenizer files "
                "into it, or set model.text_encoder=hash to use the hashed bag of words")
        stats = ck.pixel_stats()
        if stats:
            config.pixel_mean = config.pixel_mean or stats[0]
            config.pixel_std = config.pixel_std or stats[1]
        vision, text = pretrained.load_towers(ck, want_text)
        config.backbone_source = ck.source()
        if text is not None:
            text_dir, config.text_source = ck.path, config.backbone_source
    if config.text_path:
        tk = pretrained.inspect(config.text_path, "text")
        if tk.family is not None and not tk.full:
            raise CheckpointError(f"pretrained folder {tk.path}: text_path names a vision-only model "
                                  f"({tk.model_type}); give a text encoder or a SigLIP/CLIP folder")
        if not tk.has_tokenizer():
            raise CheckpointError(f"pretrained folder {tk.path}: no tokenizer files beside the text encoder "
                                  f"(none of {', '.join(pretrained.TOKENIZER_NAMES)})")
        text = pretrained.load_towers(tk, True)[1]
        text_dir, config.text_source, config.text_path = tk.path, tk.source(), None
    if text is not None:
        config.text_encoder = "transformer"
    elif config.text_encoder == "auto":
        config.text_encoder = "hash"
    elif config.text_encoder == "checkpoint":
        raise CheckpointError("text_encoder='checkpoint' needs model.backbone_path (a SigLIP/CLIP folder "
                              "with a text tower and its tokenizer)")
    return vision, text, text_dir


def region_coverage(masks: torch.Tensor, g: int, p: int) -> torch.Tensor:
    """Fraction of each token's patch covered by each mask: [R, S, S] -> [R, g * g] (raster
    order). Token (i, j) covers pixels [i*p, (i+1)*p) x [j*p, (j+1)*p); pixels beyond g * p
    reach no token (the patch convolution drops them too)."""
    span = g * p
    return F.avg_pool2d(masks[:, None, :span, :span], p).flatten(1)


class SFRewardModel(nn.Module):
    def __init__(self, config: SFRewardConfig, tokenizer_dir: str | Path | None = None):
        """Build from `config` (resolved in place). `tokenizer_dir`: the tokenizer of a saved
        model whose text encoder is a transformers one (from_pretrained passes it)."""
        super().__init__()
        self.config = config
        vision, text, text_dir = _load_pretrained(config)
        self.backbone = VisionBackbone(config, vision)  # fills config.backbone_config, image_size
        d, h = self.backbone.dim, config.hidden
        n_pix = 9 if config.pixel_diff else 0
        self.token_proj = nn.Sequential(nn.Linear(3 * d + n_pix, h), nn.GELU(), nn.LayerNorm(h))
        if config.text_encoder == "transformer":
            if text_dir is None and tokenizer_dir is None:
                raise ArtifactError("text_encoder='transformer' needs the tokenizer folder saved with the model")
            self.text = TransformerTextEncoder(config, text_dir or tokenizer_dir, text)
        else:
            self.text = HashingTextEncoder(config)
        # The region's kind (edit / context / background, part of every region input) added to
        # its pooled features: whether a change is the instructed edit or damage depends on it
        # (an unchanged region is a perfect context region and a missed edit). Zero-initialised,
        # so a model without kinds (or saved before this existed) behaves exactly as before.
        self.kind_emb = nn.Embedding(len(KIND_IDS) + 1, h)
        nn.init.zeros_(self.kind_emb.weight)
        # Per-region pixel statistics (region_pixel_stats) added to the pooled features; the last
        # layer starts at zero for the same reason.
        v = config.features_version
        n_stats = N_REGION_STATS + (N_STRUCTURE_STATS if v >= 2 else 0) + (N_DAMAGE_STATS if v >= 3 else 0)
        self.region_stats = nn.Sequential(nn.Linear(n_stats, h), nn.GELU(), nn.Linear(h, h))
        nn.init.zeros_(self.region_stats[2].weight)
        nn.init.zeros_(self.region_stats[2].bias)
        # Instruction grounding (config.grounding): does the region match the place and colours
        # the instruction names, did it change as asked. Only built when enabled, so models
        # without it keep their exact state dict.
        # With it, the grounding features and the region's pixel statistics also reach the region
        # head directly (a few hundred samples do not train them through the pooled sum).
        n_direct = 0
        if config.grounding:
            n_ground = N_GROUNDING + (N_COMPLETION if v >= 2 else 0) + (N_INTENT if v >= 3 else 0)
            self.grounding = nn.Sequential(nn.Linear(n_ground, h), nn.GELU(), nn.Linear(h, h))
            nn.init.zeros_(self.grounding[2].weight)
            nn.init.zeros_(self.grounding[2].bias)
            n_direct = n_ground + n_stats
        # region input: region pool, image mean, text, area fraction (+ direct features); with
        # region_inputs='features' only the direct features, the kind (one-hot) and the area.
        n_in = n_direct + len(KIND_IDS) + 2 if config.region_inputs == "features" else 3 * h + 1 + n_direct
        self.region_head = _mlp(n_in, h, 5, config.dropout)  # s_mu, s_lv, p_mu, p_lv, weight
        self.image_head = _mlp(2 * h, h, 2, config.dropout)       # naturalness, artifacts

    # -- core --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, sources: torch.Tensor, edits: torch.Tensor, instructions: list[str],
                region_masks: torch.Tensor, region_image: torch.Tensor,
                region_kind: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Score all regions of a batch.

        sources, edits: [B, 3, S, S] in [0, 1] (S = config.image_size).
        region_masks: [R, S, S] bool or float coverage in [0, 1], all images' regions packed.
        region_image: [R] long, image index of each region (each image has >= 1 region).
        region_kind: optional [R] long kind ids (KIND_IDS; 0 = unknown).
        Returns normalized (0..1) tensors: success_mu, success_logvar, preserve_mu,
        preserve_logvar, region_weight: [R]; naturalness, artifacts, overall, background: [B].
        """
        b = sources.shape[0]
        tok = self.backbone(torch.cat([sources, edits]))          # [2B, g, g, D]
        ts, te = tok[:b], tok[b:]
        feats = [te, ts, te - ts]
        g, p = tok.shape[1], self.backbone.patch
        # Token (i, j) sees pixels [i*p, (i+1)*p) x [j*p, (j+1)*p): the last S - g*p rows and
        # columns reach no token (384 px at patch 14: 27 tokens cover 378 px), so masks and
        # pixel statistics are pooled over exactly the patches' footprint.
        span = g * p
        if self.config.pixel_diff:
            st = pixel_stats(sources[..., :span, :span], edits[..., :span, :span], g)
            feats.append(st.to(tok.dtype).permute(0, 2, 3, 1))     # [B, g, g, 9]
        tokf = self.token_proj(torch.cat(feats, -1)).flatten(1, 2)  # [B, N, h]

        cov = region_coverage(region_masks.to(tokf.dtype), g, p)                          # [R, N]
        area = cov.mean(1, keepdim=True)                                                  # [R, 1]
        w = cov / cov.sum(1, keepdim=True).clamp_min(1e-6)
        pooled = torch.bmm(w[:, None, :], tokf[region_image]).squeeze(1)                  # [R, h]
        if region_kind is not None:
            pooled = pooled + self.kind_emb(region_kind.to(pooled.device)).to(pooled.dtype)
        rstats, gf = self.region_features(sources, edits, instructions, region_masks, region_image)
        pooled = pooled + self.region_stats(rstats.to(pooled.dtype))
        direct = []
        if gf is not None:
            gf = gf.to(pooled.dtype)
            pooled = pooled + self.grounding(gf)
            direct = [gf, rstats.to(pooled.dtype)]
        img = tokf.mean(1)                                                                 # [B, h]
        txt = self.text(instructions, tokf.device).to(tokf.dtype)                         # [B, h]

        if self.config.region_inputs == "features":
            kind = region_kind if region_kind is not None else torch.zeros_like(region_image)
            onehot = F.one_hot(kind.to(pooled.device), len(KIND_IDS) + 1).to(pooled.dtype)
            r = self.region_head(torch.cat([onehot, area * 4.0, *direct], -1))
        else:
            r = self.region_head(torch.cat([pooled, img[region_image], txt[region_image], area, *direct], -1))
        s_mu, p_mu = torch.sigmoid(r[:, 0]), torch.sigmoid(r[:, 2])
        s_lv = r[:, 1].clamp(LOGVAR_MIN, LOGVAR_MAX)
        p_lv = r[:, 3].clamp(LOGVAR_MIN, LOGVAR_MAX)
        weight = segment_softmax(r[:, 4].float(), region_image, b)
        last = torch.full((b,), -1, dtype=torch.long, device=tokf.device).scatter_reduce(
            0, region_image, torch.arange(len(region_image), device=tokf.device), reduce="amax")
        is_bg = torch.zeros(len(region_image), dtype=torch.bool, device=tokf.device)
        is_bg[last] = True
        # phi_r = min(success, preserve); the background (last region) is judged on preserve
        # alone: its success is never rated, so that head output is unconstrained there.
        phi = torch.where(is_bg, p_mu, torch.minimum(s_mu, p_mu)).float()
        overall = torch.zeros(b, device=tokf.device).index_add(0, region_image, weight * phi)
        im = torch.sigmoid(self.image_head(torch.cat([img, txt], -1)).float())
        return {"success_mu": s_mu.float(), "success_logvar": s_lv.float(),
                "preserve_mu": p_mu.float(), "preserve_logvar": p_lv.float(),
                "region_weight": weight, "overall": overall, "background": p_mu.float()[last],
                "naturalness": im[:, 0], "artifacts": im[:, 1]}

    def region_features(self, sources: torch.Tensor, edits: torch.Tensor, instructions: list[str],
                        region_masks: torch.Tensor, region_image: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight-free features of every region (config.features_version): pixel statistics
        [R, n_stats] brought to unit scale, and the grounding features [R, n_ground] (None
        without config.grounding). Inputs as in forward."""
        v2, v3 = self.config.features_version >= 2, self.config.features_version >= 3
        rstats = region_pixel_stats(sources, edits, region_masks, region_image, v2, v3)
        # x4: the statistics are small (a visible change is ~0.05-0.3); bring them to unit scale.
        rstats = torch.cat([rstats[:, :N_SMALL_STATS] * 4.0, rstats[:, N_SMALL_STATS:]], 1)
        if not self.config.grounding:
            return rstats, None
        src_c, edt_c, centre = region_geometry(region_masks, region_image, sources, edits)
        share = pool_regions(target_hue_maps(instructions, sources, edits), region_masks, region_image) if v3 else None
        return rstats, grounding_features(instructions, src_c, edt_c, centre, region_image, v2, share,
                                          lightness=self.config.features_version >= 4)

    # -- inference (the interface contract) --------------------------------------------
    def pack_masks(self, masks: list[torch.Tensor], b: int, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate per-image masks [K_i, H, W] and pack them into [sum K_i, H, W] + index."""
        if len(masks) != b:
            raise ValueError(f"masks: expected a list of {b} tensors (one per image), got {len(masks)}")
        for i, m in enumerate(masks):
            if not isinstance(m, torch.Tensor) or m.ndim != 3 or m.shape[0] < 1 or tuple(m.shape[1:]) != hw:
                shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                raise ValueError(f"masks[{i}]: expected a tensor [K>=1, {hw[0]}, {hw[1]}], got {shape}")
        packed = torch.cat([m.to(self.device, torch.float32) for m in masks])
        index = torch.repeat_interleave(torch.arange(b, device=self.device),
                                        torch.tensor([m.shape[0] for m in masks], device=self.device))
        return packed, index

    @torch.no_grad()
    def predict(self, sources: torch.Tensor, edits: torch.Tensor, instructions: list[str],
                masks: list[torch.Tensor], kinds: list[list[str]] | None = None) -> dict[str, torch.Tensor]:
        """Scores on the 0..25 scale (see docs/architecture.md, "Model interface").

        sources, edits: [B, 3, H, W] float in [0, 1]; resized here if H, W differ from
        config.image_size. instructions: list of B strings. masks: list of B bool tensors
        [K_i, H, W]. kinds: optional list of B lists of K_i region kinds ('edit', 'context',
        'background'). Returns success, preserve, success_std, preserve_std, region_image,
        region_weight: [sum K_i]; naturalness, artifacts, overall, background: [B].
        """
        if sources.ndim != 4 or sources.shape[1] != 3 or sources.shape != edits.shape:
            raise ValueError(f"sources/edits: expected equal shapes [B, 3, H, W], got "
                             f"{tuple(sources.shape)} and {tuple(edits.shape)}")
        b, _, h, w = sources.shape
        if len(instructions) != b:
            raise ValueError(f"instructions: expected {b} strings, got {len(instructions)}")
        packed, index = self.pack_masks(masks, b, (h, w))
        region_kind = None
        if kinds is not None:
            if len(kinds) != b or any(len(k) != m.shape[0] for k, m in zip(kinds, masks)):
                raise ValueError("kinds: expected one list of region kinds per image, one kind per mask")
            region_kind = kind_ids([k for ks in kinds for k in ks], self.device)
        dtype = next(self.parameters()).dtype
        src, edt = sources.to(self.device, dtype), edits.to(self.device, dtype)
        s = self.config.image_size
        if (h, w) != (s, s):
            src = F.interpolate(src, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
            edt = F.interpolate(edt, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
            packed = F.interpolate(packed[:, None], size=(s, s), mode="area")[:, 0]
        was_training = self.training
        if was_training:  # eval()/train() walk every module: ~2 ms per call, so only when needed
            self.eval()
        try:
            out = self.forward(src, edt, list(instructions), packed.to(dtype), index, region_kind)
        finally:
            if was_training:
                self.train(True)
        return {
            "success": out["success_mu"] * REWARD_MAX, "preserve": out["preserve_mu"] * REWARD_MAX,
            "success_std": torch.exp(0.5 * out["success_logvar"]) * REWARD_MAX,
            "preserve_std": torch.exp(0.5 * out["preserve_logvar"]) * REWARD_MAX,
            "region_image": index, "region_weight": out["region_weight"],
            "naturalness": out["naturalness"] * REWARD_MAX, "artifacts": out["artifacts"] * REWARD_MAX,
            "overall": out["overall"] * REWARD_MAX, "background": out["background"] * REWARD_MAX,
        }

    # -- training helpers --------------------------------------------------------------
    def freeze_unused_parameters(self) -> list[str]:
        """Stop training parameters the patch-token path never uses (see backbone.freeze_unused)."""
        s = self.config.image_size
        x = torch.zeros(1, 3, s, s, device=self.device)
        m = torch.ones(1, s, s, device=self.device)
        idx = torch.zeros(1, dtype=torch.long, device=self.device)

        def run():
            out = self.forward(x, x, ["a"], m, idx, torch.zeros(1, dtype=torch.long, device=self.device))
            return sum(v.sum() for v in out.values())
        return freeze_unused(self, run)

    # -- persistence -------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        """Write config.json and model.safetensors into `path`; returns the weights path."""
        from safetensors.torch import save_file
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save(path / CONFIG_FILE)
        if isinstance(self.text, TransformerTextEncoder):
            self.text.save_tokenizer(path)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
        return path / WEIGHTS_FILE

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        verify: bool = True) -> "SFRewardModel":
        """Load a model directory. If it has a model card with a `weights_sha256`, the
        weights are checked against it (ArtifactError on mismatch)."""
        from safetensors.torch import load_file
        path = Path(path)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise ArtifactError(f"model directory {path} has no {name}")
        if verify and (path / CARD_FILE).is_file():
            expected = json.loads((path / CARD_FILE).read_text()).get("weights_sha256")
            actual = sha256_file(path / WEIGHTS_FILE)
            if expected and actual != expected:
                raise ArtifactError(
                    f"model {path}: {WEIGHTS_FILE} sha256 {actual[:12]}... does not match the "
                    f"model card ({expected[:12]}...); the artifact is corrupt or was modified")
        try:
            config = SFRewardConfig.load(path / CONFIG_FILE)
        except (ValueError, TypeError) as e:
            raise ArtifactError(f"model {path}: bad {CONFIG_FILE}: {e}") from e
        if config.text_encoder == "transformer" and not (path / TOKENIZER_DIR).is_dir():
            raise ArtifactError(f"model {path}: its text encoder needs the tokenizer folder "
                                f"{path / TOKENIZER_DIR}, which is missing")
        try:
            model = cls(config, tokenizer_dir=path / TOKENIZER_DIR)
        except (ValueError, TypeError, OSError) as e:
            raise ArtifactError(f"model {path}: cannot rebuild the model from {CONFIG_FILE}: {e}") from e
        try:
            state = load_file(str(path / WEIGHTS_FILE))
            for key in OPTIONAL_KEYS:   # older models: keep the zero initialisation
                state.setdefault(key, model.state_dict()[key])
            model.load_state_dict(state, strict=True)
        except Exception as e:  # safetensors raises its own error types
            raise ArtifactError(f"model {path}: cannot load {WEIGHTS_FILE}: {e}") from e
        return model.to(device).eval()
