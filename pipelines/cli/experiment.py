"""`sfr experiment grpo`: GRPO of a CPU image editor with the registered SFReward served by
`sfr serve`, whole-image vs region credit (thin over sfreward.experiments.grpo)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.cli import CLIError, print_json
from warehouse.workspace import Workspace


def register_grpo(sub: argparse._SubParsersAction) -> None:
    from sfreward.experiments.grpo import GRPOExperimentConfig
    d = GRPOExperimentConfig()
    g = sub.add_parser("grpo", help="GRPO of a CPU image editor with the served SFReward: region vs whole-image "
                                    "credit (about 15-20 min on 2 quiet cores; --quick: a minute)")
    g.add_argument("--out", default=None, help="output folder (default: <home>/reports/grpo_experiment)")
    g.add_argument("--model", default="production", help="registry alias/model id, or a model directory")
    g.add_argument("--quick", action="store_true", help="tiny config for tests (numbers mean nothing)")
    g.add_argument("--steps", type=int, default=None, help=f"GRPO steps per run (default {d.rl_steps})")
    g.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    g.add_argument("--pretrain-steps", type=int, default=None,
                   help=f"flow-matching steps of the editor before RL (default {d.pretrain_steps})")
    g.add_argument("--lr", type=float, default=None, help=f"Adam learning rate of the policy (default {d.lr})")
    g.add_argument("--beta", type=float, default=None, help=f"KL-to-reference weight (default {d.beta})")
    g.add_argument("--max-grad-norm", type=float, default=None,
                   help=f"clip the gradient norm before each update (default {d.max_grad_norm})")
    g.add_argument("--group-size", type=int, default=None, help=f"G rollouts per prompt (default {d.group_size})")
    g.add_argument("--sampler-steps", type=int, default=None, help=f"T SDE steps per rollout (default {d.num_steps})")
    g.add_argument("--prompts", type=int, default=None, help=f"RL prompts, all used every step (default {d.n_train})")
    g.add_argument("--inner-steps", type=int, default=None,
                   help=f"optimizer updates per batch of rollouts (default {d.inner_steps})")
    g.add_argument("--noise-level", type=float, default=None, help=f"SDE noise level a (default {d.noise_level})")
    g.add_argument("--threads", type=int, default=None,
                   help=f"torch threads (default {d.threads}; 1 on a loaded machine, where 2 threads wait on each other)")
    g.set_defaults(func=cmd_experiment_grpo)


def grpo_config_from_args(args: argparse.Namespace):
    """The GRPOExperimentConfig that `sfr experiment grpo`'s flags ask for (CLIError if invalid)."""
    from sfreward.experiments.grpo import GRPOExperimentConfig

    cfg = GRPOExperimentConfig.quick() if args.quick else GRPOExperimentConfig()
    if args.steps is not None:
        cfg.rl_steps = args.steps
    if args.pretrain_steps is not None:
        cfg.pretrain_steps = args.pretrain_steps
    for name, field in (("lr", "lr"), ("beta", "beta"), ("max_grad_norm", "max_grad_norm"),
                        ("group_size", "group_size"), ("sampler_steps", "num_steps"), ("prompts", "n_train"),
                        ("inner_steps", "inner_steps"), ("noise_level", "noise_level"),
                        ("threads", "threads")):
        if getattr(args, name) is not None:
            setattr(cfg, field, getattr(args, name))
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
