"""The SFReward trainer: single process or DDP under torchrun, exact resume.

Data order is a pure function of (seed, step): epoch e uses randperm(n, seed + e), and the
global batch of optimizer step s is a fixed slice of it, rank r taking its part. A checkpoint
therefore only needs the step (plus model, optimizer, scheduler and RNG states) to continue
bit-identically. Only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from sfreward.model import SFRewardConfig, SFRewardModel
from sfreward.train import losses
from sfreward.train.config import TrainConfig
from sfreward.data import RegionDataset, collate

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out_dir: Path
    model_dir: Path | None          # None when stopped early (stop_after)
    step: int
    metrics: dict = field(default_factory=dict)


def setup_distributed() -> tuple[int, int, torch.device | None]:
    """Initialise the process group when torchrun's RANK is set. Returns (rank, world, device
    chosen for this rank or None)."""
    if "RANK" not in os.environ or dist.is_initialized():
        return (dist.get_rank(), dist.get_world_size(), None) if dist.is_initialized() else (0, 1, None)
    cuda = torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = None
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return dist.get_rank(), dist.get_world_size(), device


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def epoch_order(n: int, epoch: int, cfg: TrainConfig, groups: list[str] | None = None) -> list[int]:
    """Dataset indices in the order epoch `epoch` visits them: randperm(n, seed + epoch), or, with
    cfg.group_batches and `groups` (group id of every index), the groups in random order with
    each group's samples together, so a batch holds whole GRPO groups and the ranking loss
    compares the same region across rollouts (shuffled samples rarely meet their group)."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    if not (cfg.group_batches and groups):
        return torch.randperm(n, generator=gen).tolist()
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    names = sorted(by_group)
    return [i for k in torch.randperm(len(names), generator=gen).tolist() for i in by_group[names[k]]]


def batch_indices(n: int, step: int, micro: int, cfg: TrainConfig, rank: int, world: int,
                  groups: list[str] | None = None) -> list[int]:
    """Dataset indices of (step, micro-step) for this rank; see the module docstring."""
    g_micro = cfg.batch_size * world
    per_step = g_micro * cfg.grad_accum
    steps_per_epoch = n // per_step
    if steps_per_epoch < 1:
        raise ValueError(f"the training split has {n} samples, fewer than one global batch "
                         f"({per_step} = batch_size x world x grad_accum)")
    epoch, pos = divmod(step, steps_per_epoch)
    perm = epoch_order(n, epoch, cfg, groups)
    start = pos * per_step + micro * g_micro + rank * cfg.batch_size
    return perm[start:start + cfg.batch_size]


PRETRAINED_PREFIXES = ("backbone.", "text.net.")   # the transformers towers
_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def build_model(cfg: TrainConfig) -> SFRewardModel:
    if cfg.init_from:
        model = SFRewardModel.from_pretrained(cfg.init_from)
    else:
        model = SFRewardModel(SFRewardConfig.from_dict(cfg.model_config()))
    if cfg.grad_checkpointing:
        for net in (model.backbone.net, getattr(model.text, "net", None)):
            if net is not None and getattr(net, "supports_gradient_checkpointing", False):
                net.activation_checkpointing_enable({"use_reentrant": False})
    if cfg.lora_rank:
        model.backbone.add_lora(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout)
    model.freeze_unused_parameters()
    return model


def is_pretrained(name: str) -> bool:
    return name.startswith(PRETRAINED_PREFIXES)


def layer_lr_scale(name: str, n_layers: int, decay: float) -> float:
    """Layer-wise lr decay of a pretrained-tower parameter: decay^(L + 1 - l), with l = 0 for
    embeddings, l = i + 1 for encoder layer i, l = L + 1 (scale 1) for the final norms."""
    if decay == 1.0:
        return 1.0
    m = _LAYER.search(name)
    if m:
        layer = int(m.group(1)) + 1
    elif "embeddings" in name:
        layer = 0
    else:
        layer = n_layers + 1
    return decay ** (n_layers + 1 - layer)


def build_optimizer(model: SFRewardModel, cfg: TrainConfig):
    n_layers = int(model.config.backbone_config.get("num_hidden_layers", 0))
    if model.config.text_config:
        n_layers = max(n_layers, int(model.config.text_config.get("num_hidden_layers", 0)))
    groups: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = (cfg.backbone_lr_scale * layer_lr_scale(name, n_layers, cfg.layer_lr_decay)
                     if is_pretrained(name) else 1.0)
            groups.setdefault((scale, p.ndim >= 2), []).append(p)
    param_groups = [{"params": ps, "lr": cfg.lr * scale, "weight_decay": cfg.weight_decay if decay else 0.0}
                    for (scale, decay), ps in sorted(groups.items())]
    opt = torch.optim.AdamW(param_groups, lr=cfg.lr)

    def schedule(step: int) -> float:  # linear warmup, cosine to 10%
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def compute_loss(model, batch: dict, cfg: TrainConfig, device: torch.device, amp: bool) -> tuple[torch.Tensor, dict]:
    """Loss to backpropagate on this rank (see losses.py) and global values for reporting."""
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(batch["sources"].to(device), batch["edits"].to(device), batch["instructions"],
                    batch["masks"].to(device), batch["region_image"].to(device), batch.get("region_kind"))
    tg = batch["targets"].to(device)
    itg = batch["image_targets"].to(device)
    w = losses.world()
    weight = losses.bad_region_weight(tg, cfg.bad_weight) if cfg.bad_weight != 1.0 else None
    nll_s, nll_n = losses.gaussian_nll_sum(out["success_mu"], out["success_logvar"], tg[:, 0], cfg.nll_beta, weight)
    nll_p, nll_pn = losses.gaussian_nll_sum(out["preserve_mu"], out["preserve_logvar"], tg[:, 1], cfg.nll_beta, weight)
    img_pred = torch.stack([out["overall"], out["naturalness"], out["artifacts"]], 1)
    img_s, img_n = losses.mse_sum(img_pred, itg)
    rank_s, rank_n, rank_rep = (torch.zeros((), device=device),) * 3
    if cfg.rank_weight > 0:
        pred = torch.stack([out["success_mu"], out["preserve_mu"]], 1)
        rank_s, rank_n, rank_rep = losses.pairwise_rank(
            pred, tg, batch["region_key"].to(device), batch["region_sample"].to(device),
            cfg.rank_margin, cfg.rank_scale)
    loc_s, loc_n, loc_rep = (torch.zeros((), device=device),) * 3
    if cfg.loc_rank_weight > 0:
        loc_s, loc_n, loc_rep = losses.localization_rank(
            out["success_mu"], out["preserve_mu"], tg, batch["region_image"].to(device),
            cfg.rank_margin, cfg.rank_scale)
    n_reg = losses.all_sum((nll_n + nll_pn).float()).clamp_min(1)
    n_img = losses.all_sum(img_n.float()).clamp_min(1)
    n_pairs = rank_n.float().clamp_min(1)
    loss = w * ((nll_s + nll_p) / n_reg + cfg.image_weight * img_s / n_img
                + cfg.rank_weight * rank_s / n_pairs + cfg.loc_rank_weight * loc_s / loc_n.clamp_min(1))
    rep = losses.all_sum(torch.stack([(nll_s + nll_p).detach(), img_s.detach()]))
    return loss, {"nll": float(rep[0] / n_reg), "image_mse": float(rep[1] / n_img),
                  "rank": float(rank_rep / n_pairs), "pairs": int(rank_n),
                  "loc_rank": float(loc_rep / loc_n.clamp_min(1)), "loc_pairs": int(loc_n)}


def _checkpoints(out_dir: Path) -> list[Path]:
    return sorted((out_dir / "checkpoints").glob("step-*.pt"))


class WeightEMA:
    """Exponential moving average of the model's floating-point weights (cfg.ema_decay), the
    weights saved at the end: with few samples and a high learning rate the last iterate is
    noisy, and the average of the last few hundred steps ranks regions more steadily.
    The decay ramps up as min(decay, (1 + step) / (10 + step)) so the early, random weights
    fade quickly."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach(), 1 - d)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict({**model.state_dict(), **self.shadow})


def save_checkpoint(out_dir: Path, step: int, model, opt, sched, cfg: TrainConfig,
                    ema: WeightEMA | None = None) -> Path:
    d = out_dir / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"step-{step:07d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": _rng_state(), "config": cfg.to_dict(),
                "ema": ema.shadow if ema else None}, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated "latest" checkpoint
    for old in _checkpoints(out_dir)[:-max(1, cfg.keep_checkpoints)]:
        old.unlink(missing_ok=True)
    return path


def train(cfg: TrainConfig, report: Callable[[dict], None] | None = None) -> TrainResult:
    """Train per cfg; returns where the model went. `report(metrics)` is called on rank 0 at
    every log step and at the end (e.g. Dagster Pipes)."""
    rank, world, dev = setup_distributed()
    if cfg.device == "auto":
        device = dev or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = dev if (dev is not None and cfg.device == "cuda") else torch.device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    amp = cfg.amp and device.type == "cuda"
    out_dir = Path(cfg.out_dir)
    _seed_all(cfg.seed)
    model = build_model(cfg)
    ds = RegionDataset(cfg.data_dir, "train", model.config.image_size, cfg.label_mode, cfg.preload)
    groups = [str(r.get("group_id") or r["sample_id"]) for r in ds.rows]
    model.to(device).train()
    opt, sched = build_optimizer(model, cfg)
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    step = 0
    ckpts = _checkpoints(out_dir) if cfg.resume else []
    if ckpts:
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        if ema is not None:
            if state.get("ema") is None:
                raise ValueError(f"{ckpts[-1]}: checkpoint saved without ema_decay; resume with the "
                                 "same training config, or start a fresh out_dir")
            ema.shadow = {k: v.to(device) for k, v in state["ema"].items()}
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step = int(state["step"])
        if rank == 0:
            log.info("resumed from %s at step %d", ckpts[-1], step)
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    end = min(cfg.max_steps, cfg.stop_after) if cfg.stop_after is not None else cfg.max_steps
    t0, last = time.perf_counter(), {}
    while step < end:
        for micro in range(cfg.grad_accum):
            idx = batch_indices(len(ds), step, micro, cfg, rank, world, groups)
            batch = collate([ds[i] for i in idx], ds)
            sync = micro == cfg.grad_accum - 1 or world == 1
            with (contextlib.nullcontext() if sync else ddp.no_sync()):
                loss, parts = compute_loss(ddp, batch, cfg, device, amp)
                (loss / cfg.grad_accum).backward()
        if step < cfg.freeze_backbone_steps:
            # AdamW skips parameters without a gradient: no update, no weight decay, no moment
            # change. (Dropping the gradients, not requires_grad, keeps DDP's buckets intact.)
            for name, p in model.named_parameters():
                if is_pretrained(name):
                    p.grad = None
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model, step)
        step += 1
        last = {"step": step, "lr": max(sched.get_last_lr()), **parts,  # the heads' lr (scale 1)
                "step_time_s": (time.perf_counter() - t0) / max(1, step)}
        if rank == 0 and (step % cfg.log_every == 0 or step == end):
            log.info("step %d %s", step, json.dumps({k: round(v, 5) if isinstance(v, float) else v
                                                    for k, v in last.items()}))
            if report:
                report(dict(last))
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.max_steps:
            if rank == 0:
                save_checkpoint(out_dir, step, model, opt, sched, cfg, ema)
            if world > 1:
                dist.barrier()
    if step < cfg.max_steps and rank == 0:  # interrupted on purpose: leave a resumable state
        save_checkpoint(out_dir, step, model, opt, sched, cfg, ema)
    result = TrainResult(out_dir=out_dir, model_dir=None, step=step, metrics={**last, "world_size": world})
    if step >= cfg.max_steps and rank == 0:
        if ema is not None:
            ema.copy_to(model)
        result.model_dir = finish(model, cfg, ds, out_dir, result.metrics)
        if report:
            report({"final": True, **result.metrics})
    if world > 1:
        dist.barrier()
    return result


def finish(model: SFRewardModel, cfg: TrainConfig, ds: RegionDataset, out_dir: Path, metrics: dict) -> Path:
    """Save the final model, its training config and (optionally) validation metrics."""
    from sfreward import evaluate
    model_dir = out_dir / "model"
    model.backbone.merge_lora()  # a saved model is a plain backbone: no peft needed to serve it
    model.save_pretrained(model_dir)
    (model_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    metrics["n_train"] = len(ds)
    metrics["n_skipped"] = len(ds.skipped)
    if cfg.eval_split:
        try:
            ev = evaluate.evaluate(model, cfg.data_dir, cfg.eval_split)
            metrics.update({f"{cfg.eval_split}/{k}": v for k, v in ev.items()})
        except FileNotFoundError as e:
            log.warning("no evaluation: %s", e)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float))
    return model_dir
