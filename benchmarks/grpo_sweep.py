"""One-seed sweep of `sfr experiment grpo` settings, in process, one run per process.

Each job is (setting, arm): the experiment's own `run_arm` with the workspace's SFReward scored
in process (`inprocess_reward`: the same model and proposer as `sfr serve`, without HTTP), so
that many settings run side by side on a machine with many cores. Evaluation is the
experiment's (`evaluate`) at step 0 and at the last step. Prints and writes one JSON line per
job: the learned reward of the sampled rollouts (mean of the first and last 5 steps), and the
deterministic edits' learned reward, oracle reward, success and preservation (before, after),
with wall and CPU seconds.

    python benchmarks/grpo_sweep.py --model MODEL_DIR --settings sweep.json --out sweep.jsonl --procs 16
sweep.json: {"name": {GRPOExperimentConfig field: value, ...}, ...}
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _setup(overrides: dict, cache: str):
    import torch

    from sfreward.experiments.grpo import GRPOExperimentConfig
    from sfreward.experiments.grpo_data import build_prompts, multiedit_prompts, pairs_tensor
    from sfreward.grpo.policy import cached_policy

    torch.set_num_threads(1)
    cfg = GRPOExperimentConfig(**{**overrides, "threads": 1})
    cfg.eval_every = cfg.rl_steps
    pre, train, held = build_prompts(cfg.image_size, cfg.data_seed, cfg.n_train, cfg.n_heldout)
    sets = {"train": train, "heldout": held,
            "multiedit": multiedit_prompts(Path(cache) / f"multiedit-{os.getpid()}", cfg.image_size, cfg.n_multiedit, cfg.data_seed)}
    policy, key, cached = cached_policy(cfg.policy(), pairs_tensor(pre), cache)
    return cfg, sets, policy


def _pretrain(overrides: dict, cache: str) -> None:
    _setup(overrides, cache)


def job(args: tuple) -> dict:
    name, overrides, arm, model, cache = args
    import numpy as np

    import sfreward
    from sfreward.experiments.grpo import run_arm
    from sfreward.grpo.rewards import inprocess_reward

    t0, c0 = time.time(), time.process_time()
    cfg, sets, policy = _setup(overrides, cache)
    reward_fn = inprocess_reward(sfreward.load(model, device="cpu"))
    r = run_arm(arm, cfg.seeds[0], policy, {"sets": sets}, reward_fn, cfg)
    sm = r["sample_reward"]
    k = min(5, len(sm))
    out = {"setting": name, "arm": arm, "overrides": overrides,
           "sampled_first": float(np.mean(sm[:k])), "sampled_last": float(np.mean(sm[-k:])),
           "step_s": r["step_s"], "wall_s": round(time.time() - t0, 1),
           "cpu_s": round(time.process_time() - c0, 1)}
    for s in r["evals"][0]:
        for m in ("learned_reward", "oracle_reward", "success", "preserve"):
            out[f"{s}.{m}"] = [round(r["evals"][0][s][m], 4), round(r["evals"][-1][s][m], 4)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="SFReward model directory")
    ap.add_argument("--settings", required=True, help="JSON {name: {config field: value}}")
    ap.add_argument("--out", required=True, help="JSON-lines results")
    ap.add_argument("--cache", default="grpo-sweep-cache", help="pretrained-policy cache folder")
    ap.add_argument("--procs", type=int, default=os.cpu_count())
    ap.add_argument("--arms", default="whole,region")
    a = ap.parse_args()
    settings = json.loads(Path(a.settings).read_text())
    editors = sorted({json.dumps({k: v for k, v in o.items() if k in ("pretrain_steps", "channels", "data_seed")},
                                 sort_keys=True) for o in settings.values()})
    jobs = [(n, o, arm, a.model, a.cache) for n, o in settings.items() for arm in a.arms.split(",")]
    with get_context("spawn").Pool(a.procs) as pool, open(a.out, "a") as f:
        # pretrain each distinct editor once (in parallel) before the runs that load it
        pool.starmap(_pretrain, [(json.loads(e), a.cache) for e in editors])
        for res in pool.imap_unordered(job, jobs):
            line = json.dumps(res)
            print(line, flush=True)
            f.write(line + "\n")
            f.flush()


if __name__ == "__main__":
    main()
