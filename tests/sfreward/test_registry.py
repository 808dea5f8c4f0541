"""Registry: artifacts with lineage, sha256 verification, aliases, the promotion gate."""
from __future__ import annotations

import json

import pytest
import torch

from sfreward import registry
from sfreward.model import ArtifactError, SFRewardConfig, SFRewardModel
from sfreward.train.api import evaluate_and_record
from warehouse.db import Warehouse

torch.set_num_threads(1)


def test_register_records_card_and_lineage(sfreward_workspace, sfreward_trained_model):
    ws = sfreward_workspace
    mid = registry.register_model(ws, sfreward_trained_model, "ds-test", metrics={"loss": 0.5, "bad": float("nan")})
    art = ws.models / mid
    card = json.loads((art / "model_card.json").read_text())
    assert card["weights_sha256"] == registry.sha256_file(art / "model.safetensors")
    assert card["dataset_id"] == "ds-test" and card["metrics"] == {"loss": 0.5, "bad": None}
    assert card["code_version"] and card["train_config"]["max_steps"] == 120  # from train_config.json
    readme = (art / "README.md").read_text()
    assert mid in readme and card["weights_sha256"] in readme and "ds-test" in readme
    rec = registry.get_model(ws, "candidate")
    assert rec["model_id"] == mid and rec["aliases"] == ["candidate"] and rec["path"] == f"models/{mid}"
    assert rec["n_params"] == sum(p.numel() for p in registry.load_model(ws, mid).state_dict().values())
    child = registry.register_model(ws, sfreward_trained_model, "ds-test", parent_model_id=mid, alias=None)
    assert registry.get_model(ws, child)["parent_model_id"] == mid
    assert registry.resolve(ws, "candidate") == mid
    assert [m["model_id"] for m in registry.list_models(ws)] == [mid, child]
    with pytest.raises(registry.RegistryError, match="no model or alias 'production'"):
        registry.resolve(ws, "production")


def test_tampered_artifact_is_refused(sfreward_workspace, sfreward_trained_model):
    ws = sfreward_workspace
    mid = registry.register_model(ws, sfreward_trained_model, "ds-test")
    registry.load_model(ws, mid)
    weights = ws.models / mid / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in a weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the registry"):
        registry.load_model(ws, mid)
    with pytest.raises(ArtifactError, match="model card"):  # serving loads by path: also refused
        SFRewardModel.from_pretrained(ws.models / mid)
    with pytest.raises(ArtifactError):
        registry.promote(ws, mid, "production", force=True)
    weights.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        registry.load_model(ws, mid)


def test_promotion_gate_blocks_a_worse_model(sfreward_workspace, sfreward_trained_model, tmp_path):
    ws = sfreward_workspace
    good = registry.register_model(ws, sfreward_trained_model, "ds-test")
    good_m = evaluate_and_record(ws, good, "ds-test", "test")
    gate = registry.promote(ws, good, "production")
    assert gate.passed and gate.reason == "no production model yet"
    # an untrained model of the same architecture
    torch.manual_seed(123)
    SFRewardModel(SFRewardConfig.load(sfreward_trained_model / "config.json")).save_pretrained(tmp_path / "raw")
    worse = registry.register_model(ws, tmp_path / "raw", "ds-test")
    with pytest.raises(registry.RegistryError, match="no evaluation shared"):
        registry.promote(ws, worse, "production")
    worse_m = evaluate_and_record(ws, worse, "ds-test", "test")
    assert worse_m["localization_auroc"] < good_m["localization_auroc"]
    with pytest.raises(registry.RegistryError, match="worse than production.*localization_auroc"):
        registry.promote(ws, "candidate", "production")
    assert registry.resolve(ws, "production") == good
    gate = registry.promotion_gate(ws, worse)
    assert not gate.passed and gate.comparison["localization_auroc"]["delta"] < 0
    # the good model re-registered passes against itself (not worse), and force bypasses the gate
    assert registry.promotion_gate(ws, good).passed
    registry.promote(ws, worse, "production", force=True)
    rows = Warehouse.open(ws).query("SELECT model_id, previous_model_id FROM model_aliases WHERE alias = 'production'")
    assert rows == [(worse, good)]
