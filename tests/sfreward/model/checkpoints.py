"""Tiny transformers checkpoints saved exactly as downloaded ones are laid out (config.json,
model.safetensors, preprocessor_config.json, tokenizer files), with random seeded weights:
SigLIP / CLIP / DINOv2, vision-only or full vision-language folders."""
from __future__ import annotations

import json
from pathlib import Path

import torch

SENTENCES = ["make the cup red", "make the cat blue", "make the sky brighter", "make the face darker",
             "make the wall green", "make the tree golden", "make the table red", "make the sign blue",
             "recolour the box", "warmer"]
MEAN, STD = [0.45, 0.4, 0.35], [0.22, 0.21, 0.2]


def vision_kwargs(image_size: int, patch: int) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=image_size, patch_size=patch)


def text_kwargs() -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                vocab_size=64, max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3)


def save_tokenizer(path: Path) -> None:
    """A word-level tokenizer trained with `tokenizers` on a few sentences, wrapped as
    PreTrainedTokenizerFast (what AutoTokenizer loads from tokenizer.json)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(
        special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=16)
    fast.save_pretrained(str(path))


def make_checkpoint(path: Path, family: str, image_size: int = 224, patch: int = 32, full: bool = False,
                    tokenizer: bool = True, preprocessor: bool = True, seed: int = 0) -> Path:
    """Save a tiny `family` ('siglip' | 'clip' | 'dinov2' | 'dinov2_reg') checkpoint into `path`."""
    import transformers as tf
    torch.manual_seed(seed)
    v = vision_kwargs(image_size, patch)
    if family == "siglip" and full:
        model = tf.SiglipModel(tf.SiglipConfig(vision_config=v, text_config=text_kwargs()))
    elif family == "clip" and full:
        model = tf.CLIPModel(tf.CLIPConfig(vision_config=v, text_config=text_kwargs(), projection_dim=16))
    elif family == "siglip":
        model = tf.SiglipVisionModel(tf.SiglipVisionConfig(**v))
    elif family == "clip":
        model = tf.CLIPVisionModel(tf.CLIPVisionConfig(**v))
    elif family == "dinov2":
        model = tf.Dinov2Model(tf.Dinov2Config(**v))
    elif family == "dinov2_reg":
        model = tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(**v, num_register_tokens=4))
    else:
        raise ValueError(family)
    model.save_pretrained(str(path))
    if full and tokenizer:
        save_tokenizer(path)
    if preprocessor:  # a real processor config: resize + crop settings are ignored by SFReward
        (path / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "SiglipImageProcessor", "do_resize": True, "do_center_crop": True,
            "crop_size": {"height": image_size - 16, "width": image_size - 16},
            "size": {"height": image_size, "width": image_size}, "image_mean": MEAN, "image_std": STD}))
    return path
