"""`sfr experiment grpo`: GRPO of a CPU image editor with the registered SFReward served by
`sfr serve`, whole-image vs region credit (thin over sfreward.experiments.grpo)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pipelines.cli import CLIError, print_json
from pipelines.configs import Flags
from warehouse.workspace import Workspace


def grpo_flags():
    """`sfr experiment grpo`'s settings flags, from GRPOExperimentConfig's fields and help. Every
    default is None (not given), so that --quick's base config keeps its own values."""
    from sfreward.experiments.grpo import GRPOExperimentConfig
    d = GRPOExperimentConfig()
    fields = ("rl_steps", "pretrain_steps", "lr", "beta", "max_grad_norm", "group_size", "num_steps", "n_train",
              "inner_steps", "noise_level", "threads")
    return Flags(GRPOExperimentConfig, fields,
                 names={"rl_steps": "steps", "num_steps": "sampler-steps", "n_train": "prompts"},
                 defaults={f: None for f in fields}, notes={f: f"default {getattr(d, f)}" for f in fields})


def register_grpo(sub: argparse._SubParsersAction) -> None:
    from sfreward.experiments.grpo import GRPOExperimentConfig
    d = GRPOExperimentConfig()
    g = sub.add_parser("grpo", help="GRPO of a CPU image editor with the served SFReward: region vs whole-image "
                                    "credit (about 15-20 min on 2 quiet cores; --quick: a minute)")
    g.add_argument("--out", default=None, help="output folder (default: <home>/reports/grpo_experiment)")
    g.add_argument("--model", default="production", help="registry alias/model id, or a model directory")
    g.add_argument("--quick", action="store_true", help="tiny config for tests (numbers mean nothing)")
    g.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    grpo_flags().add_to(g)
    g.set_defaults(func=cmd_experiment_grpo)


def grpo_config_from_args(args: argparse.Namespace):
    """The GRPOExperimentConfig that `sfr experiment grpo`'s flags ask for (CLIError if invalid)."""
    from sfreward.experiments.grpo import GRPOExperimentConfig

    base = GRPOExperimentConfig.quick() if args.quick else GRPOExperimentConfig()
    cfg = dataclasses.replace(base, **grpo_flags().values(args))
    if args.seeds:
        try:
            cfg.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise CLIError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    try:
        cfg.validate()
    except ValueError as e:
        raise CLIError(f"sfr experiment grpo: {e}") from None
    return cfg


def cmd_experiment_grpo(args: argparse.Namespace) -> int:
    from sfreward.experiments.grpo import run_grpo_experiment
    from sfreward.experiments.grpo_server import NoProductionModel

    cfg = grpo_config_from_args(args)
    try:
        ws = Workspace.open(args.home, create=False)
    except FileNotFoundError as e:
        raise CLIError(f"{e}. Run `sfr demo` (or `sfr train` and `sfr models promote`) to get a registered "
                       "SFReward model first.") from None
    out = Path(args.out) if args.out else ws.reports / "grpo_experiment"
    try:
        res = run_grpo_experiment(cfg, out, home=ws.home, model=args.model, cache_dir=ws.home / "cache" / "grpo",
                                  progress=True, command="sfr " + " ".join(sys.argv[1:]))
    except NoProductionModel as e:
        raise CLIError(str(e)) from None
    except ValueError as e:
        raise CLIError(str(e)) from None
    print_json({"summary": res["summary"], "wall_s": res["wall_s"], **res["paths"]})
    return 0
