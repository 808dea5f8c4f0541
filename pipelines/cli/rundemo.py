"""`sfr demo`: the main job on embedded defaults (see pipelines/demo.py)."""
from __future__ import annotations

import argparse

from pipelines.cli import CLIError
from pipelines.configs import Flags


def _flags() -> Flags:
    """`sfr demo`'s flags, from DemoConfig (short flag names kept from before the dataclass had help)."""
    from pipelines.demo import DemoConfig

    return Flags(DemoConfig, ("n_sources", "groups_per_source", "rollouts", "image_size", "annotators_per_task",
                              "seed", "train_overrides"),
                 names={"n_sources": "sources", "image_size": "size", "annotators_per_task": "annotators",
                        "train_overrides": "train-set"})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole platform end to end on synthetic data (CPU, minutes)")
    _flags().add_to(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    cfg = _flags().build(args)
    try:
        report = run_demo(args.home, cfg)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(f"{e}") from None
    print(f"\nReport: {report}")
    return 0
