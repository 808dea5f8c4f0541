"""Region kinds and region pixel statistics as model inputs: zero-initialised (a model saved
before them loads and scores exactly as before), and once trained kinds change the scores of the
regions they name."""
import torch
from safetensors.torch import load_file, save_file

from sfreward.model import SFRewardConfig, SFRewardModel
from sfreward.model.model import OPTIONAL_KEYS, WEIGHTS_FILE, kind_ids

torch.set_num_threads(1)


def _inputs():
    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 3, 64, 64, generator=g)
    edt = src.clone()
    edt[:, :, :32] = 1 - edt[:, :, :32]
    masks = torch.zeros(2, 2, 64, 64, dtype=torch.bool)
    masks[:, 0, :32] = True
    masks[:, 1] = ~masks[:, 0]
    return src, edt, ["recolor the top"] * 2, list(masks)


def test_old_model_without_kind_embedding_loads_and_scores_the_same(tmp_path):
    torch.manual_seed(0)
    model = SFRewardModel(SFRewardConfig()).eval()
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / WEIGHTS_FILE))
    for key in OPTIONAL_KEYS:                      # what a model saved before kinds and region stats holds
        del state[key]
    save_file(state, str(tmp_path / WEIGHTS_FILE), metadata={"format": "pt"})
    old = SFRewardModel.from_pretrained(tmp_path)
    assert torch.count_nonzero(old.kind_emb.weight) == 0 and torch.count_nonzero(old.region_stats[2].weight) == 0
    src, edt, instr, masks = _inputs()
    a = old.predict(src, edt, instr, masks)
    b = old.predict(src, edt, instr, masks, kinds=[["edit", "background"]] * 2)
    assert torch.equal(a["success"], b["success"]) and torch.equal(a["preserve"], b["preserve"])


def test_kinds_reach_the_region_scores_after_training():
    torch.manual_seed(0)
    model = SFRewardModel(SFRewardConfig())
    assert "kind_emb.weight" not in model.freeze_unused_parameters()   # trainable (DDP: gets a gradient)
    src, edt, instr, masks = _inputs()
    packed, index = model.pack_masks(masks, 2, (64, 64))
    # Same pixels, two kinds: the edit-kind region should score 1, the context-kind region 0.
    kinds = kind_ids(["edit", "background", "context", "background"])
    target = torch.tensor([1.0, 0.5, 0.0, 0.5])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        out = model(src, edt, instr, packed.float(), index, kinds)
        loss = ((out["success_mu"] - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    s = model.predict(src, edt, instr, masks, kinds=[["edit", "background"], ["context", "background"]])["success"]
    assert s[0] > 20 and s[2] < 5          # 0..25 scale: the kind alone separates identical regions
    assert torch.count_nonzero(model.kind_emb.weight) > 0
