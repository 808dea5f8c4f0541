"""Markdown table and PNG plot of the spatial-credit experiment's results dict."""
from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = {"whole": "whole-image advantage (Flow-GRPO)",
          "region": "region advantage + region-weighted loss",
          "region_area": "region advantage, area-weighted loss (token weights as whole)"}
COLORS = {"whole": "tab:gray", "region": "tab:blue", "region_area": "tab:orange"}


def _fmt(ms, digits=3) -> str:
    return "n/a" if ms is None else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def plot(results: dict, path: str | Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, col in COLORS.items():
        rs = [r for r in results["runs"] if r["arm"] == arm]
        if not rs:
            continue
        steps = np.asarray(rs[0]["steps"])
        ev = np.asarray([r["eval_reward"] for r in rs])
        axes[0].plot(steps, ev.mean(0), color=col, label=LABELS[arm])
        axes[0].fill_between(steps, ev.min(0), ev.max(0), color=col, alpha=0.2)
        sm = np.asarray([r["sample_reward"] for r in rs])
        axes[1].plot(np.arange(sm.shape[1]), sm.mean(0), color=col, label=LABELS[arm])
        axes[1].fill_between(np.arange(sm.shape[1]), sm.min(0), sm.max(0), color=col, alpha=0.2)
    axes[0].axhline(cfg["threshold"], ls="--", color="k", lw=0.8, label=f"threshold {cfg['threshold']}")
    axes[0].set(title="eval reward (mean action, training prompts)", xlabel="GRPO step", ylabel="mean region reward")
    axes[1].set(title="reward of sampled rollouts", xlabel="GRPO step", ylabel="mean region reward")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"spatial credit: {len(cfg['seeds'])} seeds (line = mean, band = min..max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_markdown(results: dict, command: str = "sfr experiment credit") -> str:
    cfg, s = results["config"], results["summary"]
    lines = [
        "# Spatial credit experiment: region advantages vs whole-image advantages",
        "",
        f"Command: `{results.get('command', command)}`  ",
        f"Date: {results['date']}; machine: {results['machine']}; wall time {results['wall_s']} s.",
        "",
        "A tiny conv policy edits synthetic photos per latent token (Gaussian per-token RGB offsets,",
        f"{cfg['image_size']} px images, {cfg['token_px']} px tokens) to follow a recolour instruction, trained with",
        f"GRPO ({cfg['n_prompts']} prompts x {cfg['group_size']} rollouts per step, {cfg['steps']} steps,"
        f" {cfg['inner_steps']} gradient steps each, lr {cfg['lr']}, sigma {cfg['sigma']}) once per arm with the same seeds,",
        "prompts and budget; rewards are ground-truth region rewards R_r = sqrt(phi_r * 25) / 25",
        f"(region weights: {cfg['region_weights']}). Evaluation uses the mean action.",
        "",
    ]
    arms = [a for a in LABELS if a in s]
    lines += [f"| metric (mean ± std over {len(cfg['seeds'])} seeds) | " + " | ".join(LABELS[a] for a in arms) + " |",
              "|---" * (len(arms) + 1) + "|"]

    def reach(a):
        return _fmt(s[a]["steps_to_threshold"], 1) + f" ({s[a]['n_reached']}/{s[a]['n_seeds']} reached)"

    rows = [(f"steps to eval reward >= {cfg['threshold']} (seeds that reached it)", reach)]
    for key, name, digits in (("final_reward", "final eval reward (0..1)", 3),
                              ("auc_eval_reward", "mean eval reward over training (AUC)", 3),
                              ("edit_success", "final edit success, target region (0..25)", 2),
                              ("context_preserve", "final preserve, other regions (0..25)", 2),
                              ("background_preserve", "final preserve, background (0..25)", 2),
                              ("heldout_reward", f"held-out prompts ({cfg['n_heldout']}: other regions, other colours) eval reward", 3)):
        rows.append((name, lambda a, key=key, digits=digits: _fmt(s[a][key], digits)))
    lines += [f"| {name} | " + " | ".join(f(a) for a in arms) + " |" for name, f in rows]
    lines += ["", "Per seed (final eval reward, steps to threshold):", ""]
    for run in results["runs"]:
        lines.append(f"- {run['arm']} seed {run['seed']}: {run['final']['reward']:.3f}, "
                     f"{run['steps_to_threshold'] if run['steps_to_threshold'] is not None else 'not reached'}")
    lines += ["", "![reward curves](credit_experiment.png)", ""]
    lines += ["## Reading (computed from the runs above)", ""] + [f"- {v}" for v in reading(results)]
    lines += ["", "Limits: a toy policy (one Gaussian step per token, no diffusion model), rewards from ground",
              "truth rather than a learned reward model (no reward noise or mislocalization), small images,",
              "one edit type. It tests the credit-assignment mechanics of `sfreward.credit`, not image quality.", ""]
    return "\n".join(lines)


def reading(results: dict) -> list[str]:
    """Plain statements comparing each region arm with the whole-image arm, paired by seed."""
    by = {(r["arm"], r["seed"]): r for r in results["runs"]}
    seeds = results["config"]["seeds"]
    out = []
    for arm in ("region", "region_area"):
        if (arm, seeds[0]) not in by:
            continue
        d_final = [by[(arm, s)]["final"]["reward"] - by[("whole", s)]["final"]["reward"] for s in seeds]
        d_auc = [np.mean(by[(arm, s)]["eval_reward"]) - np.mean(by[("whole", s)]["eval_reward"]) for s in seeds]
        d_edit = [by[(arm, s)]["final"]["edit_success"] - by[("whole", s)]["final"]["edit_success"] for s in seeds]
        wins = sum(d > 0 for d in d_final)
        verb = "higher" if np.mean(d_final) > 0 else "lower"
        out.append(f"`{arm}` vs `whole`: final eval reward {verb} by {np.mean(d_final):+.3f} on average "
                   f"({wins}/{len(seeds)} seeds better), AUC {np.mean(d_auc):+.3f}, "
                   f"target-region success {np.mean(d_edit):+.2f} / 25.")
    best = {a: [max(by[(a, s)]["eval_reward"]) for s in seeds] for a in ("whole", "region", "region_area")
            if (a, seeds[0]) in by}
    out.append("Best eval reward reached during training (per seed; the threshold is "
               f"{results['config']['threshold']}, so steps-to-threshold is sensitive to where it sits): "
               + "; ".join(f"`{a}` " + ", ".join(f"{v:.3f}" for v in vals) for a, vals in best.items()) + ".")
    return out
