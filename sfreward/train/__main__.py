"""`python -m sfreward.train [--config file.yaml] [key=value ...]`

Runs single-process, under `torchrun --nproc-per-node N -m sfreward.train ...` (DDP), and
under Dagster Pipes (PipesSubprocessClient): when launched by Pipes, rank 0 streams progress
as log lines and reports the final metrics and model directory as the asset's
materialization metadata. Without Pipes it prints the final metrics as JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from sfreward.train.config import load_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sfreward.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML file with TrainConfig fields")
    ap.add_argument("overrides", nargs="*", help="key=value (model.<field>=value for the model)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, OSError) as e:
        print(f"sfreward.train: error: {e}", file=sys.stderr)
        return 2
    from sfreward.train.trainer import train
    import os
    rank0 = int(os.environ.get("RANK", "0")) == 0
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes
    if rank0 and PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            def report(m: dict) -> None:
                pipes.log.info("metrics " + json.dumps(m, default=float))
            result = train(cfg, report=report)
            meta = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
            meta.update(model_dir=str(result.model_dir or ""), step=result.step, out_dir=str(result.out_dir))
            pipes.report_asset_materialization(metadata=meta)
    else:
        result = train(cfg)
        if rank0:
            print(json.dumps({"model_dir": str(result.model_dir or ""), "step": result.step,
                              **result.metrics}, default=float, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
