"""One declaration per setting (pipelines.stageconfig): the `sfr` flags and the Dagster config
come from the stage dataclass's fields, with their defaults and help text."""

import argparse
import dataclasses

import dagster as dg
import pytest

from pipelines.stageconfig import add_arguments, dagster_config, from_arguments, to_dataclass
from warehouse.ingest import IngestConfig


@dataclasses.dataclass
class Stage:
    size: int = dataclasses.field(default=64, metadata={"help": "side in pixels"})
    rate: float = dataclasses.field(default=0.5, metadata={"help": "learning rate"})
    label: str = dataclasses.field(default="a", metadata={"help": "run label"})
    fast: bool = dataclasses.field(default=False, metadata={"help": "skip the slow part"})
    tags: list = dataclasses.field(default_factory=list, metadata={"help": "free tags"})
    bare: int = 3


def test_flags_keep_defaults_unless_given_and_show_the_help():
    p = argparse.ArgumentParser()
    add_arguments(p, Stage, ["size", "rate", "label", "fast"])
    assert from_arguments(Stage, p.parse_args([]), ["size", "rate", "label", "fast"]) == Stage()
    args = p.parse_args(["--size", "32", "--rate", "0.1", "--fast", "--label", "b"])
    assert from_arguments(Stage, args, ["size", "rate", "label", "fast"], bare=9) == \
        Stage(size=32, rate=0.1, label="b", fast=True, bare=9)
    text = p.format_help()
    assert "side in pixels (default: 64)" in text and "--no-fast" in text
    with pytest.raises(SystemExit):
        p.parse_args(["--size", "big"])


def test_only_simple_fields_with_help_are_generated():
    with pytest.raises(TypeError, match=r"Stage.tags: type 'list' is not one of"):
        add_arguments(argparse.ArgumentParser(), Stage, ["tags"])
    with pytest.raises(ValueError, match=r"Stage.bare has no help text"):
        dagster_config(Stage, ["bare"], "BareConfig")
    with pytest.raises(ValueError, match=r"Stage has no field\(s\) \['nope'\]"):
        dagster_config(Stage, ["nope"], "NopeConfig")


StageConfig = dagster_config(Stage, ["size", "fast"], "StageConfig")


def test_generated_dagster_config_runs_in_a_real_materialization():
    fields = StageConfig.model_fields
    assert fields["size"].default == 64 and fields["size"].description == "side in pixels"
    seen = []

    @dg.asset
    def staged(config: StageConfig) -> None:
        seen.append(to_dataclass(config, Stage, ["size", "fast"], label="from-dagster"))

    assert dg.materialize([staged], run_config={"ops": {"staged": {"config": {"size": 8}}}}).success
    assert seen == [Stage(size=8, fast=False, label="from-dagster")]
    with pytest.raises(dg.DagsterInvalidConfigError):   # a wrong type is refused before the run
        dg.materialize([staged], run_config={"ops": {"staged": {"config": {"size": "big"}}}})


def test_ingest_settings_are_declared_once():
    """`sfr ingest` flags and the editing_samples config are IngestConfig's SETTINGS."""
    from pipelines.cli import build_parser
    from pipelines.defs.ingest import IngestRunConfig

    settings = set(IngestConfig.SETTINGS)
    assert settings <= set(IngestRunConfig.model_fields)
    for name in settings:
        f = next(f for f in dataclasses.fields(IngestConfig) if f.name == name)
        assert IngestRunConfig.model_fields[name].description == f.metadata["help"]
        assert IngestRunConfig.model_fields[name].default == f.default
    args = build_parser().parse_args(["ingest", "m.jsonl", "--chunk-size", "7", "--max-pixels", "1000"])
    assert from_arguments(IngestConfig, args, IngestConfig.SETTINGS) == IngestConfig(chunk_size=7, max_pixels=1000)
    assert IngestRunConfig(chunk_size=7).ingest_config() == IngestConfig(chunk_size=7)


def test_region_proposal_settings_are_declared_once():
    """`sfr propose` flags and the region_proposals config are ProposerConfig's SETTINGS; the
    defaults give the same region-set identity (config hash) on both surfaces."""
    from pipelines.cli import build_parser
    from pipelines.cli.regions import _config
    from pipelines.defs.regions import RegionProposalsConfig
    from sfreward.regions import ProposerConfig

    for name in ProposerConfig.SETTINGS:
        f = next(f for f in dataclasses.fields(ProposerConfig) if f.name == name)
        assert RegionProposalsConfig.model_fields[name].description == f.metadata["help"]
    cli = _config(build_parser().parse_args(["propose", "--all", "--max-regions", "3", "--nms-iou", "0.5"]))
    dagster = RegionProposalsConfig(max_regions=3, nms_iou=0.5).proposer_config()
    assert cli == dagster == ProposerConfig(max_regions=3, nms_iou=0.5)
    assert RegionProposalsConfig().proposer_config().config_hash() == ProposerConfig().config_hash()
