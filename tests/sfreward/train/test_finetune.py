"""Presets and fine-tuning controls: freeze the backbone for N steps, layer-wise lr decay,
LoRA (peft), gradient checkpointing, bf16 autocast (GPU only)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from sfreward.model import PRESETS, SFRewardConfig, SFRewardModel
from sfreward.train import TrainConfig, load_config
from sfreward.train.trainer import _seed_all, build_model, build_optimizer, train
from tests.fixtures.sfreward_data import tiny_train_config
from tests.sfreward.model.checkpoints import make_checkpoint


def test_preset_registry_and_precedence(tmp_path):
    assert {"tiny", "demo", "base", "large"} <= set(PRESETS)
    assert PRESETS["large"].model["backbone_config"]["patch_size"] == 14
    with pytest.raises(ValueError, match=r"unknown model preset 'huge'.*'base'"):
        TrainConfig(preset="huge")
    cfg = load_config(None, ["max_steps=5"], preset="base")
    base = PRESETS["base"].train
    assert cfg.preset == "base" and cfg.max_steps == 5 and cfg.lr == base["lr"]
    assert cfg.layer_lr_decay == base["layer_lr_decay"]
    (tmp_path / "c.yaml").write_text("preset: demo\nlr: 0.01\nmodel: {hidden: 32}\n")
    cfg = load_config(tmp_path / "c.yaml", ["batch_size=3"])
    assert (cfg.preset, cfg.lr, cfg.batch_size, cfg.max_steps) == ("demo", 0.01, 3, PRESETS["demo"].train["max_steps"])
    mc = cfg.model_config()
    assert mc["hidden"] == 32 and mc["backbone_config"] == PRESETS["demo"].model["backbone_config"]
    cfg = load_config(None, ["preset=tiny", "model.image_size=32"])
    assert cfg.preset == "tiny" and cfg.model_config()["image_size"] == 32
    assert SFRewardModel(SFRewardConfig.from_dict(cfg.model_config())).config.image_size == 32


def _backbone_state(model_dir) -> dict:
    return {k: v for k, v in load_file(str(model_dir / "model.safetensors")).items() if k.startswith("backbone.")}


def test_freeze_backbone_for_n_steps(sfreward_dataset, tmp_path):
    cfg = tiny_train_config(sfreward_dataset, tmp_path / "a", max_steps=2, freeze_backbone_steps=2)
    _seed_all(cfg.seed)
    init = {f"backbone.{k}": v.clone() for k, v in build_model(cfg).backbone.state_dict().items()}
    frozen = _backbone_state(train(cfg).model_dir)
    assert frozen.keys() == init.keys() and all(torch.equal(frozen[k], init[k]) for k in init)
    cfg3 = tiny_train_config(sfreward_dataset, tmp_path / "b", max_steps=3, freeze_backbone_steps=2)
    after = _backbone_state(train(cfg3).model_dir)
    changed = [k for k in init if not torch.equal(after[k], init[k])]
    assert "backbone.net.embeddings.patch_embedding.weight" in changed


def test_layer_wise_lr_decay_param_groups(tmp_path):
    ck = make_checkpoint(tmp_path / "s", "siglip", 64, 16)
    cfg = TrainConfig(lr=1e-3, backbone_lr_scale=0.5, layer_lr_decay=0.5, model={"backbone_path": str(ck)})
    model = build_model(cfg)
    opt, _ = build_optimizer(model, cfg)
    lr_of = {id(p): g["initial_lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    bb = 1e-3 * 0.5
    assert lr_of[id(named["backbone.net.embeddings.patch_embedding.weight"])] == pytest.approx(bb * 0.5 ** 3)
    assert lr_of[id(named["backbone.net.encoder.layers.0.mlp.fc1.weight"])] == pytest.approx(bb * 0.5 ** 2)
    assert lr_of[id(named["backbone.net.encoder.layers.1.mlp.fc1.weight"])] == pytest.approx(bb * 0.5)
    assert lr_of[id(named["backbone.net.post_layernorm.weight"])] == pytest.approx(bb)
    assert lr_of[id(named["region_head.0.weight"])] == pytest.approx(1e-3)


def test_lora_trains_adapters_only_and_saves_merged(sfreward_dataset, tmp_path):
    cfg = tiny_train_config(sfreward_dataset, tmp_path / "run", max_steps=2, lora_rank=2, preset="tiny")
    model = build_model(cfg)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}
    assert trainable and all("lora_" in n for n in trainable)
    # 2 layers x 4 projections x (A: r x 64 + B: 64 x r), tiny backbone width 64, r = 2
    assert sum(trainable.values()) == 2 * 4 * (2 * 64 + 64 * 2)
    torch.manual_seed(3)
    for n, p in model.named_parameters():  # non-zero adapters (lora_B starts at zero)
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    from tests.sfreward.model.test_pretrained import _inputs
    src, edt, masks = _inputs(64)
    ins = ["make the cup red", "warmer"]
    with_adapters = model.predict(src, edt, ins, masks)
    model.backbone.merge_lora()
    model.save_pretrained(tmp_path / "merged")
    reloaded = SFRewardModel.from_pretrained(tmp_path / "merged").predict(src, edt, ins, masks)
    for k in with_adapters:
        assert torch.allclose(with_adapters[k], reloaded[k], atol=1e-4), k
    res = train(cfg)  # through the trainer: the saved backbone is plain (adapters merged)
    keys = load_file(str(res.model_dir / "model.safetensors")).keys()
    assert not any("lora" in k for k in keys)


def test_gradient_checkpointing_recomputes_and_keeps_gradients(tmp_path):
    ck = make_checkpoint(tmp_path / "s", "siglip", 64, 16)
    grads, calls = [], []
    for gc in (False, True):
        torch.manual_seed(0)
        model = build_model(TrainConfig(grad_checkpointing=gc, model={"backbone_path": str(ck)})).train()
        n = [0]
        # a pre-hook: recomputation stops early once the saved tensors are back, before the
        # module returns, so a post-forward hook would not see the replay
        model.backbone.net.encoder.layers[0].mlp.register_forward_pre_hook(lambda *a: n.__setitem__(0, n[0] + 1))
        x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        m = torch.ones(2, 64, 64)
        out = model(x[:1], x[1:], ["make the cup red"], m[:1], torch.zeros(1, dtype=torch.long))
        sum(v.sum() for v in out.values()).backward()
        grads.append(model.backbone.net.embeddings.patch_embedding.weight.grad.clone())
        calls.append(n[0])
    assert calls == [1, 2]  # the checkpointed layer runs again in backward
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast runs on CUDA only")
def test_bf16_autocast_on_gpu(sfreward_dataset, tmp_path):
    res = train(tiny_train_config(sfreward_dataset, tmp_path, max_steps=2, amp=True, device="cuda"))
    assert res.model_dir is not None and torch.isfinite(torch.tensor(res.metrics["nll"]))
