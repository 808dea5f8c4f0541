"""Summary, Markdown and PNGs of the GRPO experiment's results dict."""
from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = {"whole": "whole-image advantage (Flow-GRPO)", "region": "region advantage + region-weighted loss"}
COLORS = {"whole": "tab:gray", "region": "tab:blue"}
METRICS = ("success", "preserve", "oracle_reward", "learned_reward", "divergence")


def _ms(v) -> list[float]:
    a = np.asarray(v, float)
    return [round(float(np.nanmean(a)), 4), round(float(np.nanstd(a)), 4)]


def summarize(results: dict) -> dict:
    """Per arm and eval set: mean ± std over seeds of the final metrics, and the change from
    the pretrained policy (same prompts, same noise)."""
    out = {}
    for arm in LABELS:
        rs = [r for r in results["runs"] if r["arm"] == arm]
        if not rs:
            continue
        out[arm] = {"n_seeds": len(rs), "step_s": _ms([r["step_s"] for r in rs])}
        for s in results["before"]:
            out[arm][s] = {m: _ms([r["evals"][-1][s][m] for r in rs]) for m in METRICS}
            out[arm][s]["delta_success"] = _ms([r["evals"][-1][s]["success"] - results["before"][s]["success"]
                                                for r in rs])
            out[arm][s]["delta_preserve"] = _ms([r["evals"][-1][s]["preserve"] - results["before"][s]["preserve"]
                                                 for r in rs])
    return out


def plot(results: dict, path: str | Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("train", "learned_reward", "learned reward (SFReward), training prompts"),
              ("heldout", "success", "GT edit success in target regions, held-out photos"),
              ("heldout", "preserve", "GT preservation outside targets, held-out photos"),
              ("multiedit", "success", "GT success, MultiEditBench (2 targets)"),
              ("multiedit", "preserve", "GT preservation, MultiEditBench"),
              ("train", "divergence", "learned - oracle reward (hacking shows here)")]
    fig, axes = plt.subplots(2, 4, figsize=(19, 8))
    ax0 = axes[0, 0]
    for arm, col in COLORS.items():
        rs = [r for r in results["runs"] if r["arm"] == arm]
        if not rs:
            continue
        sm = np.asarray([r["sample_reward"] for r in rs])
        x = np.arange(sm.shape[1])
        ax0.plot(x, sm.mean(0), color=col, label=LABELS[arm])
        ax0.fill_between(x, sm.min(0), sm.max(0), color=col, alpha=0.2)
        steps = np.asarray(rs[0]["steps"])
        for ax, (s, m, _) in zip(axes.flat[1:], panels + [("heldout", "divergence", ""), ]):
            v = np.asarray([[e[s][m] for e in r["evals"]] for r in rs])
            ax.plot(steps, v.mean(0), color=col, marker="o", ms=3, label=LABELS[arm])
            ax.fill_between(steps, v.min(0), v.max(0), color=col, alpha=0.2)
    ax0.set(title="reward of sampled rollouts (learned, image score)", xlabel="GRPO step")
    for ax, (s, m, title) in zip(axes.flat[1:], panels + [("heldout", "divergence", "learned - oracle, held-out photos")]):
        ax.set(title=title, xlabel="GRPO step")
        if m == "divergence":
            ax.axhline(0, color="k", lw=0.6)
    for ax in axes.flat:
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    fig.suptitle(f"GRPO of a CPU image editor with SFReward ({results['model']['model_id']}): "
                 f"{len(results['config']['seeds'])} seeds per arm, band = min..max over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_examples(sets: dict, before: dict, runs: list[dict], path: str | Path, seed: int | None = None) -> None:
    """Rows: up to 3 prompts per set; columns: source, ideal (GT), pretrained, after each arm."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = runs[0]["seed"] if seed is None else seed
    after = {r["arm"]: r["examples"] for r in runs if r["seed"] == seed}
    rows = [(s, i) for s, ps in sets.items() for i in range(min(3, len(ps)))]
    cols = ["source", "ideal edit (GT)", "pretrained"] + [f"after RL: {a}" for a in after]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.1 * len(cols), 2.3 * len(rows)), squeeze=False)
    for r, (s, i) in enumerate(rows):
        p = sets[s][i]
        per = before[s].shape[0] // min(3, len(sets[s]))
        imgs = [p.source, p.ideal, before[s][i * per].transpose(1, 2, 0)] + \
               [after[a][s][i * per].transpose(1, 2, 0) for a in after]
        for c, img in enumerate(imgs):
            ax = axes[r, c]
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{s}\n{p.instruction[:38]}", fontsize=6)
    fig.suptitle(f"example edits (seed {seed}, deterministic sampling from the same noise)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(ms, d=3) -> str:
    return f"{ms[0]:.{d}f} ± {ms[1]:.{d}f}"


def to_markdown(results: dict) -> str:
    cfg, summ, before = results["config"], results["summary"], results["before"]
    lines = [
        "# GRPO with a learned region reward vs a whole-image reward",
        "",
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}; machine: {results['machine']}; wall time {results['wall_s']:.0f} s "
        f"(policy pretraining {results['policy']['pretrain_s']:.0f} s, cached={results['policy']['cached']}).",
        "",
        f"Reward: the registered SFReward `{results['model']['model_id']}` served by `sfr serve` over HTTP "
        f"(regions proposed by the server once per group). Policy: diffusers UNet2DModel editor, "
        f"{results['policy']['n_params']:,} parameters, flow matching on {results['policy']['n_pretrain_pairs']} "
        f"synthetic edit pairs for {cfg['pretrain_steps']} steps (never given a mask). "
        f"GRPO: {cfg['n_train']} prompts x G={cfg['group_size']} rollouts, T={cfg['num_steps']} SDE steps "
        f"(a={cfg['noise_level']}), {cfg['rl_steps']} steps x {cfg['inner_steps']} updates, lr {cfg['lr']}, "
        f"clip {cfg['clip_eps']}, beta {cfg['beta']}; seeds {cfg['seeds']}.",
        "",
        "Ground truth is used for evaluation only. success: 0..25 inside the target regions (how far toward "
        "the ideal edit); preserve: 0..25 outside them (untouched = 25); oracle reward: the region-reward formula "
        "on ground-truth scores; divergence = learned - oracle. Final values, mean ± std over seeds "
        "(pretrained policy in the first row).",
        "",
        "![curves](grpo_experiment.png)",
        "",
    ]
    for s in before:
        lines += [f"## {s}", "", "| policy | success | preserve | oracle reward | learned reward | divergence |",
                  "|---|---|---|---|---|---|",
                  "| pretrained | " + " | ".join(f"{before[s][m]:.3f}" for m in METRICS) + " |"]
        for arm in summ:
            lines.append(f"| {LABELS[arm]} | " + " | ".join(_fmt(summ[arm][s][m]) for m in METRICS) + " |")
        lines.append("")
    lines += ["## Verdict (written by the code from the numbers above)", ""]
    if "whole" in summ and "region" in summ:
        for s in before:
            w, r = summ["whole"][s], summ["region"][s]
            ds = r["success"][0] - w["success"][0]
            dp = r["preserve"][0] - w["preserve"][0]
            noise = max(w["success"][1], r["success"][1])
            tag = "within seed noise" if abs(ds) <= noise else ("region better" if ds > 0 else "whole better")
            lines.append(f"- {s}: region - whole = {ds:+.2f} success ({tag}; seed std up to {noise:.2f}), "
                         f"{dp:+.2f} preserve.")
    lines += ["", f"Seconds per GRPO step: " + ", ".join(f"{a} {_fmt(summ[a]['step_s'], 2)}" for a in summ), "",
              "![examples](grpo_examples.png)", ""]
    return "\n".join(lines)
