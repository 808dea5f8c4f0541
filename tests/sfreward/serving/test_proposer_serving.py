"""Serving proposes regions the way training did: the proposer config is recorded with the model
at registration, `sfr serve`/`sfr score` take proposer options (default: the recorded config), a
mismatch warns and shows in /version, and the server proposes one region set per group."""
from __future__ import annotations

import argparse
import dataclasses
import logging

import httpx
import numpy as np
import pytest

from pipelines.cli import CLIError
from pipelines.cli.serving import proposer_config
from sfreward import registry
from sfreward.regions.base import ProposerConfig
from sfreward.server.app import BackgroundServer, ServerConfig, create_app
from sfreward.server.models import ModelPool, PoolConfig
from tests.fixtures.serving import edits_of, photo
from tests.sfreward.serving.test_server import payload, post
from warehouse.curation.config import CurationConfig
from warehouse.curation.dataset import build_dataset


def flags(**kw) -> argparse.Namespace:
    base = {"proposer_config": None, "sam_checkpoint": None, "sam_model_type": None, "proposer_device": None}
    return argparse.Namespace(**{**base, **kw})


def test_registration_records_the_datasets_proposer_and_serve_reports_a_mismatch(
        annotated_warehouse, curation_ws, tiny_model_dir, server_token, caplog):
    ws = curation_ws
    version = build_dataset(ws, CurationConfig(dedupe_hamming=-1))
    mid = registry.register_model(ws, tiny_model_dir, version.dataset_id)
    # The fixture's region sets were stored by proposer 'test' with config hash 'cfg'.
    assert registry.trained_proposer(ws, mid) == {"proposer": "test", "config_hash": "cfg", "config": {}}
    assert "region proposer at training: test (config hash `cfg`)" in (ws.models / mid / "README.md").read_text()
    assert registry.trained_proposer(ws, registry.register_model(ws, tiny_model_dir, None)) is None

    pool = ModelPool.from_registry(ws, mid, device="cpu", config=PoolConfig(refresh_s=3600))
    with caplog.at_level(logging.WARNING, logger="sfreward.server.models"):
        app = create_app(pool, ServerConfig(token=server_token, proposer_config=ProposerConfig()))
    assert any("trained on regions from test (config cfg)" in r.getMessage() for r in caplog.records)
    with BackgroundServer(app) as srv:
        rep = httpx.get(srv.url + "/version").json()["proposer"]
    assert rep == {"serving": {"proposer": "classical", "config_hash": ProposerConfig().config_hash()},
                   "trained": {"proposer": "test", "config_hash": "cfg"}, "match": False}


def test_version_reports_a_match_and_the_group_gets_one_proposed_set(tiny_scorer, server_token, tiny_sam_config):
    cfg = dataclasses.replace(tiny_sam_config, edit_min_cover=0.0)
    trained = {"proposer": cfg.proposer, "config_hash": cfg.config_hash(), "config": {}}
    app = create_app(ModelPool.static(tiny_scorer, {"trained_proposer": trained}),
                     ServerConfig(token=server_token, proposer_config=cfg))
    src = photo("astronaut", 96)
    edits = edits_of(src, 6, seed=3)
    with BackgroundServer(app) as srv:
        assert httpx.get(srv.url + "/version").json()["proposer"]["match"] is True
        out = post(srv, payload(src, edits), server_token).json()
    assert out["region_source"] == "proposed"
    # One set for the whole group, from SAM, equal to what the proposer gives the group offline.
    from sfreward.regions import propose_group
    from warehouse import masks

    offline = propose_group(src, edits, cfg)
    assert [r["kind"] for r in out["regions"]] == [r.kind for r in offline]
    for got, want in zip(out["regions"], offline):
        assert np.array_equal(masks.decode(got["mask"]), want.mask)
    assert all(len(row) == len(offline) for row in out["rewards"])


def test_proposer_options(tiny_sam_checkpoint, tmp_path):
    assert proposer_config(flags(), None)[0] == ProposerConfig()
    recorded = {"proposer": "sam:tiny", "config_hash": "x",
                "config": {"model_type": "tiny", "checkpoint": str(tiny_sam_checkpoint), "points_per_side": 4}}
    cfg, origin = proposer_config(flags(), recorded)
    assert origin == "model card" and cfg.model_type == "tiny" and cfg.points_per_side == 4
    cfg, _ = proposer_config(flags(sam_model_type="tiny", sam_checkpoint=str(tiny_sam_checkpoint),
                                   proposer_device="cpu"), None)
    assert (cfg.proposer, cfg.device) == ("sam:tiny", "cpu")
    f = tmp_path / "p.json"
    f.write_text('{"change_threshold": 20.0, "max_regions": 5}')
    cfg, origin = proposer_config(flags(proposer_config=str(f)), recorded)
    assert origin == str(f) and (cfg.change_threshold, cfg.max_regions, cfg.model_type) == (20.0, 5, None)
    with pytest.raises(CLIError, match="needs a checkpoint path"):
        proposer_config(flags(sam_model_type="vit_b"), None)
    with pytest.raises(CLIError, match="--sam-checkpoint: SAM weights .*nope.pth do not exist"):
        proposer_config(flags(sam_model_type="vit_b", sam_checkpoint=str(tmp_path / "nope.pth")), None)
    gone = {**recorded, "config": {**recorded["config"], "checkpoint": str(tmp_path / "moved.pth")}}
    with pytest.raises(CLIError, match="recorded with the model; pass --sam-checkpoint"):
        proposer_config(flags(), gone)
    f.write_text('{"no_such_setting": 1}')
    with pytest.raises(CLIError, match="unknown proposer config keys"):
        proposer_config(flags(proposer_config=str(f)), None)
