"""Transformers instruction encoder: the text tower of a SigLIP / CLIP checkpoint, or any
local transformers text encoder, with the tokenizer from the same folder.

instructions (B strings) -> tokens (at most text_max_length, padded per batch) -> last hidden
states [B, T, Dt] -> mean over real tokens (attention mask) -> LayerNorm + Linear -> [B, hidden].
A masked mean works the same for every encoder (no reliance on a pooling head or on which
token ends the text).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from sfreward.model.config import SFRewardConfig
from sfreward.model.pretrained import build_text_net, config_dict, load_tokenizer

TOKENIZER_DIR = "tokenizer"   # beside model.safetensors in a saved SFReward model


class TransformerTextEncoder(nn.Module):
    """instructions: list[str] of length B -> [B, cfg.hidden]."""

    def __init__(self, cfg: SFRewardConfig, tokenizer_dir: str | Path, net: nn.Module | None = None):
        super().__init__()
        if net is None:
            net = build_text_net(cfg.text_config)
        model_type, kw = config_dict(net.config)
        cfg.text_config = {"model_type": model_type, **kw}
        self.net = net
        self.tokenizer = load_tokenizer(Path(tokenizer_dir))
        if self.tokenizer.pad_token is None:  # batches need padding; any id works (masked out)
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        limit = getattr(net.config, "max_position_embeddings", None) or cfg.text_max_length
        self.max_length = min(cfg.text_max_length, int(limit))
        dim = int(net.config.hidden_size)
        self.proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, cfg.hidden))

    def forward(self, instructions: list[str], device: torch.device) -> torch.Tensor:
        enc = self.tokenizer(list(instructions), padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        ids = enc["input_ids"].to(device)
        mask = enc["attention_mask"].to(device)
        hid = self.net(input_ids=ids, attention_mask=mask).last_hidden_state      # [B, T, Dt]
        m = mask.to(hid.dtype)[..., None]
        pooled = (hid * m).sum(1) / m.sum(1).clamp_min(1.0)                       # [B, Dt]
        return self.proj(pooled)

    def save_tokenizer(self, model_dir: str | Path) -> None:
        self.tokenizer.save_pretrained(str(Path(model_dir) / TOKENIZER_DIR))
