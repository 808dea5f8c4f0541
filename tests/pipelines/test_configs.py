"""pipelines.configs: a stage's CLI flags and Dagster run config come from its dataclass, with the
same defaults and help text, and read back into the same dataclass."""

import argparse
import dataclasses
from dataclasses import dataclass, field

import dagster as dg
import pytest

from pipelines.configs import Flags, dagster_config, dagster_values, default_of, documented_fields, from_dagster


@dataclass
class Stage:
    steps: int = field(default=10, metadata={"help": "optimizer steps"})
    lr: float = field(default=3e-4, metadata={"help": "learning rate, 50% of the paper's"})
    name: str = field(default="run", metadata={"help": "run name"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle the rows"})
    dry_run: bool = field(default=False, metadata={"help": "only print the plan"})
    device: str | None = field(default=None, metadata={"help": "where to run", "choices": ("cpu", "cuda")})
    tags: list[str] = field(default_factory=lambda: ["base"], metadata={"help": "free-form tags", "metavar": "TAG"})
    fractions: tuple[float, float, float] = field(default=(0.8, 0.1, 0.1), metadata={"help": "split shares"})
    columns: dict[str, str] = field(default_factory=dict, metadata={"help": "field -> column"})
    budget_bytes: int = field(default=8 << 20, metadata={"help": "memory budget"})
    internal: int = 7                      # no help: on no surface

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


CLI_FIELDS = ("steps", "lr", "name", "shuffle", "dry_run", "device", "tags", "fractions", "budget_bytes")
DAGSTER_FIELDS = ("steps", "lr", "name", "shuffle", "dry_run", "device", "tags", "fractions", "columns")


def _flags(**kw) -> Flags:
    return Flags(Stage, CLI_FIELDS, names={"dry_run": "plan-only"}, units={"budget_bytes": (1 << 20, "MiB")}, **kw)


def _parse(flags: Flags, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    flags.add_to(p)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ CLI
def _wide_parser() -> argparse.ArgumentParser:
    """Help on one line per flag, whatever the terminal (argparse wraps at hyphens otherwise)."""
    return argparse.ArgumentParser(prog="stage", formatter_class=lambda prog: argparse.HelpFormatter(prog, width=1000))


def test_flags_defaults_are_the_dataclass_defaults():
    assert _flags().build(_parse(_flags(), [])) == Stage()
    assert documented_fields(Stage) == (*CLI_FIELDS[:-1], "columns", "budget_bytes")   # not `internal`


def test_flags_round_trip():
    want = Stage(steps=3, lr=0.5, name="x", shuffle=False, dry_run=True, device="cuda", tags=["a", "b"],
                 fractions=(0.5, 0.25, 0.25), budget_bytes=3 << 19)
    argv = ["--steps", "3", "--lr", "0.5", "--name", "x", "--no-shuffle", "--plan-only", "--device", "cuda",
            "--tags", "a", "--tags", "b", "--fractions", "0.5", "0.25", "0.25", "--budget-bytes", "1.5"]
    assert _flags().build(_parse(_flags(), argv)) == want


def test_flags_help_text_types_and_choices():
    p = _wide_parser()
    _flags().add_to(p)
    text = " ".join(p.format_help().split())
    for name in CLI_FIELDS:
        assert dataclasses.fields(Stage)[[f.name for f in dataclasses.fields(Stage)].index(name)] \
            .metadata["help"] in text, name
    assert "--plan-only, --no-plan-only" in text and "--shuffle, --no-shuffle" in text
    assert "--dry-run" not in text and "--internal" not in text
    assert "learning rate, 50% of the paper's (default: 0.0003)" in text   # '%' survives argparse
    assert "memory budget (MiB) (default: 8.0)" in text
    assert "--tags TAG" in text
    with pytest.raises(SystemExit):
        p.parse_args(["--device", "tpu"])
    with pytest.raises(SystemExit):
        p.parse_args(["--steps", "three"])


def test_flag_names_defaults_and_notes():
    f = _flags(defaults={"name": None, "lr": 1.0}, notes={"name": "default: the model's"})
    assert f.flag("dry_run") == "--plan-only" and f.flag("budget_bytes") == "--budget-bytes"
    args = _parse(f, [])
    # A None default means "not given": the field is left out, the dataclass (or a file) decides.
    assert "name" not in f.values(args) and f.values(args)["lr"] == 1.0
    assert f.build(args) == Stage(lr=1.0)
    p = _wide_parser()
    f.add_to(p)
    assert "run name; default: the model's" in " ".join(p.format_help().split())


def test_flags_refuse_a_field_without_help_an_unknown_name_or_an_unsupported_type():
    with pytest.raises(ValueError, match=r"Stage.internal has no help text.*metadata"):
        Flags(Stage, ("internal",))
    with pytest.raises(KeyError, match="'nope' is not one of the chosen fields"):
        Flags(Stage, ("steps",), names={"nope": "x"})
    with pytest.raises(KeyError, match="Stage has no field 'nope'"):
        Flags(Stage, ("nope",))

    @dataclass
    class Odd:
        blob: dict = field(default_factory=dict, metadata={"help": "anything"})

    with pytest.raises(TypeError, match="Odd.blob: type <class 'dict'> has no CLI/Dagster form"):
        Flags(Odd, ("blob",))
    with pytest.raises(ValueError, match="tags is a list flag; it has no default of its own"):
        Flags(Stage, ("tags",), defaults={"tags": ["x"]})
    with pytest.raises(TypeError, match="Stage.columns: a dict field has no CLI form"):
        _parse(Flags(Stage, ("columns",)), [])


def test_flag_value_still_checked_by_the_dataclass():
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        _flags().build(_parse(_flags(), ["--steps", "0"]))


# -------------------------------------------------------------------------------------- Dagster
StageConfig = dagster_config(Stage, DAGSTER_FIELDS)


def test_dagster_config_defaults_and_descriptions_are_the_dataclass_ones():
    fields = StageConfig.model_fields
    assert set(fields) == set(DAGSTER_FIELDS)
    by_name = {f.name: f for f in dataclasses.fields(Stage)}
    for name in DAGSTER_FIELDS:
        assert fields[name].description == by_name[name].metadata["help"]
        default = default_of(Stage, name)
        assert fields[name].default == (list(default) if isinstance(default, tuple) else default), name
    assert from_dagster(Stage, StageConfig()) == Stage()
    with pytest.raises(ValueError, match="Stage.internal has no help text"):
        dagster_config(Stage, ("internal",))
    with pytest.raises(KeyError, match="defaults for fields not chosen"):
        dagster_config(Stage, ("steps",), defaults={"lr": 1.0})


class Run(StageConfig):
    extra_only_in_dagster: str = "x"


seen: list[Stage] = []


@dg.asset
def stage(config: Run) -> None:
    assert config.extra_only_in_dagster == "y"
    seen.append(from_dagster(Stage, config, internal=9))


def test_dagster_run_config_round_trip_through_a_materialization():
    """Dagster validates the run config against the generated schema and hands it to the asset;
    the dataclass built from it carries every value (tuples back as tuples)."""
    seen.clear()
    cfg = {"steps": 4, "lr": 0.1, "name": "n", "shuffle": False, "dry_run": True, "device": "cpu",
           "tags": ["t"], "fractions": [0.6, 0.2, 0.2], "columns": {"source": "img"}, "extra_only_in_dagster": "y"}
    res = dg.materialize([stage], run_config={"ops": {"stage": {"config": cfg}}})
    assert res.success
    assert seen == [Stage(steps=4, lr=0.1, name="n", shuffle=False, dry_run=True, device="cpu", tags=["t"],
                          fractions=(0.6, 0.2, 0.2), columns={"source": "img"}, internal=9)]
    schema = stage.op.config_schema.config_type.fields
    assert schema["steps"].description == "optimizer steps" and schema["steps"].default_value == 10
    # Run-only fields are not dataclass fields.
    assert "extra_only_in_dagster" not in dagster_values(Stage, Run(extra_only_in_dagster="z"))
    bad = {"ops": {"stage": {"config": {**cfg, "steps": "many"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.materialize([stage], run_config=bad)


# ----------------------------------------------------------------------- the stages that use it
def _help(capsys, *argv: str) -> str:
    """A command's --help, one line per flag (argparse wraps at hyphens otherwise)."""
    from pipelines.cli import build_parser

    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit):
        mp.setenv("COLUMNS", "1000")
        build_parser().parse_args([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def _helps(cls, names) -> list[str]:
    from pipelines.configs import help_of

    return [" ".join(help_of(cls, n).split()) for n in names]


def test_region_proposals_one_declaration(monkeypatch, capsys):
    from pipelines.cli import build_parser
    from pipelines.cli.regions import _config
    from pipelines.configs import documented_fields
    from pipelines.defs.regions import RegionProposalsConfig
    from sfreward.regions import ProposerConfig

    for var in ("SFR_SAM_CHECKPOINT", "SFR_SAM_MODEL_TYPE"):
        monkeypatch.delenv(var, raising=False)
    assert RegionProposalsConfig().proposer_config() == ProposerConfig()
    assert _config(build_parser().parse_args(["propose", "--all"])) == ProposerConfig()
    documented = documented_fields(ProposerConfig)
    # The run config keys of before the helper, all still there.
    assert {"model_type", "checkpoint", "device", "name", "points_per_side", "max_regions", "min_area_frac",
            "nms_iou"} == set(documented)
    fields = RegionProposalsConfig.model_fields
    assert [fields[n].description for n in documented] == _helps(ProposerConfig, documented)
    text = _help(capsys, "propose")
    assert all(h in text for h in _helps(ProposerConfig, documented))
    args = build_parser().parse_args(["propose", "--all", "--nms-iou", "0.5", "--min-area-frac", "0.01"])
    assert _config(args) == ProposerConfig(nms_iou=0.5, min_area_frac=0.01)
    serve = _help(capsys, "serve")
    assert all(h in serve for h in _helps(ProposerConfig, ("checkpoint", "model_type", "device")))


def test_ingest_one_declaration(capsys):
    from pipelines.cli import build_parser
    from pipelines.cli.core import INGEST_FLAGS
    from pipelines.defs.ingest import IngestRunConfig
    from warehouse.ingest import IngestConfig

    assert from_dagster(IngestConfig, IngestRunConfig()) == IngestConfig()
    assert INGEST_FLAGS.build(build_parser().parse_args(["ingest", "m.jsonl"])) == IngestConfig()
    assert IngestRunConfig.model_fields["chunk_size"].description == "rows per warehouse transaction"
    assert _helps(IngestConfig, ["max_pixels"])[0] in _help(capsys, "ingest")


def test_serve_flags_one_declaration(capsys):
    from pipelines.cli import build_parser
    from pipelines.cli.serving import serve_flags, server_config
    from sfreward.server.capture import CaptureConfig
    from sfreward.server.config import PoolConfig, ServerConfig

    args = build_parser().parse_args(["serve"])
    token = "a-token-of-some-length"
    server, batcher, pool, capture = serve_flags()
    assert server_config(args, token) == ServerConfig(token=token)
    assert pool.build(args) == PoolConfig()
    # Capture is the one default the command line sets apart: off unless asked for.
    assert capture.build(args) == CaptureConfig(rate=0.0)
    text = _help(capsys, "serve")
    for flags in serve_flags():
        assert all(h in text for h in _helps(flags.cls, flags.fields)), flags.cls
    args = build_parser().parse_args(["serve", "--max-request-mb", "1.5", "--no-propose", "--max-batch", "8"])
    cfg = server_config(args, token)
    assert (cfg.max_request_bytes, cfg.propose_regions, cfg.batch.max_batch_size) == (3 << 19, False, 8)


def test_demo_flags_one_declaration(capsys):
    from pipelines.cli import build_parser
    from pipelines.cli.rundemo import _flags
    from pipelines.demo import DemoConfig

    assert _flags().build(build_parser().parse_args(["demo"])) == DemoConfig()
    args = build_parser().parse_args(["demo", "--sources", "6", "--size", "64", "--annotators", "2",
                                      "--train-set", "max_steps=5", "--train-set", "lr=0.1"])
    assert _flags().build(args) == DemoConfig(n_sources=6, image_size=64, annotators_per_task=2,
                                              train_overrides=["max_steps=5", "lr=0.1"])
    text = _help(capsys, "demo")
    assert all(h in text for h in _helps(DemoConfig, _flags().fields))


def test_push_and_synth_one_declaration(capsys):
    from annotation.push import PushConfig
    from pipelines.cli import build_parser
    from pipelines.cli.annotation import _push_flags
    from pipelines.cli.demo import _synth_flags
    from pipelines.defs.annotation import AnnotationTasksConfig
    from sfreward.synthetic import SynthConfig

    assert from_dagster(PushConfig, AnnotationTasksConfig()) == PushConfig()
    assert AnnotationTasksConfig.model_fields["overlap"].description == _helps(PushConfig, ["overlap"])[0]
    args = build_parser().parse_args(["annotate", "push", "--project", "p", "--batch", "b"])
    assert _push_flags().build(args) == PushConfig()
    args = build_parser().parse_args(["annotate", "push", "--project", "p", "--batch", "b", "--overlap", "3",
                                      "--region-config", "abc"])
    assert _push_flags().build(args) == PushConfig(overlap=3, region_config_hash="abc")
    assert all(h in _help(capsys, "annotate", "push") for h in _helps(PushConfig, _push_flags().fields))
    assert _synth_flags().build(build_parser().parse_args(["synth"])) == SynthConfig()
    args = build_parser().parse_args(["synth", "--size", "48", "--regions", "4", "--source-dir", "/p"])
    assert _synth_flags().build(args) == SynthConfig(image_size=48, n_regions=4, source_dir="/p")
    assert all(h in _help(capsys, "synth") for h in _helps(SynthConfig, _synth_flags().fields))


def test_dataset_build_and_multiedit_flags_one_declaration(capsys):
    from pipelines.cli import build_parser
    from pipelines.cli.dataset import BUILD_FLAGS, _config
    from pipelines.cli.demo import _multiedit_flags
    from sfreward.multiedit import MultiEditConfig
    from warehouse.curation import CurationConfig

    assert _config(build_parser().parse_args(["dataset", "build"])) == CurationConfig()
    args = build_parser().parse_args(["dataset", "build", "--set", "seed=3", "--seed", "4", "--name", "n",
                                      "--default-ratings", "ignore"])
    assert _config(args) == CurationConfig(seed=4, name="n", default_ratings="ignore")
    assert all(h in _help(capsys, "dataset", "build") for h in _helps(CurationConfig, BUILD_FLAGS.fields))
    assert _multiedit_flags().build(build_parser().parse_args(["multiedit", "build"])) == MultiEditConfig()
    args = build_parser().parse_args(["multiedit", "build", "--size", "64", "--n-targets", "3"])
    assert _multiedit_flags().build(args) == MultiEditConfig(image_size=64, n_targets=3)


def test_credit_experiment_flags_one_declaration(capsys):
    from pipelines.cli import build_parser
    from pipelines.cli.demo import _credit_flags
    from sfreward.experiments.credit import ExperimentConfig

    assert _credit_flags().build(build_parser().parse_args(["experiment", "credit"])) == ExperimentConfig()
    args = build_parser().parse_args(["experiment", "credit", "--prompts", "3", "--steps", "5"])
    assert _credit_flags().build(args, seeds=[4]) == ExperimentConfig(n_prompts=3, steps=5, seeds=[4])
    assert all(h in _help(capsys, "experiment", "credit") for h in _helps(ExperimentConfig, _credit_flags().fields))


def test_train_request_one_declaration(capsys):
    from pipelines.cli import build_parser
    from pipelines.cli.models import train_flags
    from pipelines.configs import help_of
    from pipelines.defs.training import TrainingRunConfig
    from sfreward.train.config import TrainRequest

    assert train_flags().build(build_parser().parse_args(["train"])) == TrainRequest()
    args = build_parser().parse_args(["train", "--dataset", "ds-1", "--preset", "tiny", "--set", "lr=0.1",
                                      "--set", "max_steps=3", "--nproc", "2"])
    req = train_flags().build(args)
    assert req == TrainRequest(dataset_id="ds-1", preset="tiny", overrides=["lr=0.1", "max_steps=3"], nproc=2)
    assert req.train_config().lr == 0.1 and req.train_config().max_steps == 3
    assert from_dagster(TrainRequest, TrainingRunConfig()) == TrainRequest()
    described = {k: f.description for k, f in TrainingRunConfig.model_fields.items()}
    assert described == {f: help_of(TrainRequest, f) for f in documented_fields(TrainRequest)}
    text = _help(capsys, "train")
    assert all(h in text for h in _helps(TrainRequest, train_flags().fields))
