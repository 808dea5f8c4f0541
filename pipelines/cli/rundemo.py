"""`sfr demo`: the main job on embedded defaults (see pipelines/demo.py)."""
from __future__ import annotations

import argparse

from pipelines.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    from pipelines.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser("demo", help="run the whole platform end to end on synthetic data (CPU, minutes)")
    p.add_argument("--sources", type=int, default=d.n_sources, help="synthetic source photos")
    p.add_argument("--groups-per-source", type=int, default=d.groups_per_source)
    p.add_argument("--rollouts", type=int, default=d.rollouts, help="edits per GRPO group")
    p.add_argument("--size", type=int, default=d.image_size, help="image side, pixels")
    p.add_argument("--annotators", type=int, default=d.annotators_per_task, help="simulated annotators per task")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override (repeatable), applied after the demo's own settings "
                        "(the demo preset, sfreward.model.presets), e.g. --train-set max_steps=50")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import DemoConfig, run_demo

    cfg = DemoConfig(n_sources=args.sources, groups_per_source=args.groups_per_source, rollouts=args.rollouts,
                     image_size=args.size, annotators_per_task=args.annotators, seed=args.seed,
                     train_overrides=list(args.train_set))
    try:
        report = run_demo(args.home, cfg)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(f"{e}") from None
    print(f"\nReport: {report}")
    return 0
