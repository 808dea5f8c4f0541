"""What limits the demo model's localization: its region *features* or its training?

Trains only the region head of the `demo` preset (it reads the region's weight-free features:
`SFRewardModel.region_features`, kind, area; the backbone does not reach it) on a demo dataset
export, with the trainer's region losses and schedule, in a few seconds instead of a full
training. With `--oracle all` each region's features also carry the scores the simulated
annotators aim at (the ground truth of the region, blended by overlap where the proposed mask
matches no true region: annotation.simulate._match): the head then has perfect perception and
learns only from the noisy labels. The gap between the two runs is what better features could
still win. `--oracle success` / `preserve` carry one of the two; `--oracle target` only whether
the region is the instructed edit's (its IoU-matched true region, IoU >= 0.3: perfect grounding);
`--oracle edit` that flag and, on the target, its aimed-at success (how well the edit was done).
Prints one JSON line per training seed: localization AUROC and region SRCC against the labels
and the ground truth (IoU matching as pipelines.demo.reward_check).

    PYTHONPATH=. .venv/bin/python benchmarks/probe_region_head.py <dataset dir> <ground_truth.jsonl> [--oracle MODE] [--seeds 0,1,2] [--features-version N]
"""
import argparse
import json
import math

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from annotation.simulate import _match
from pipelines.demo import _matched_truth
from sfreward.data import RegionDataset, collate
from sfreward.evaluate import region_metrics
from sfreward.model import SFRewardConfig, SFRewardModel
from sfreward.model.model import KIND_IDS, LOGVAR_MAX, LOGVAR_MIN, _mlp
from sfreward.model.presets import PRESETS
from sfreward.synthetic import read_ground_truth
from sfreward.train import losses
from warehouse import masks as maskcodec


ORACLES = ("none", "all", "success", "preserve", "target", "edit")


def split_inputs(model: SFRewardModel, ds_dir: str, split: str, truth: dict, oracle: str) -> dict:
    ds = RegionDataset(ds_dir, split, model.config.image_size)
    b = collate([ds[i] for i in range(len(ds))], ds)
    with torch.no_grad():
        rstats, gf = model.region_features(b["sources"], b["edits"], b["instructions"], b["masks"], b["region_image"])
    kind = F.one_hot(b["region_kind"], len(KIND_IDS) + 1).float()
    area = b["masks"].flatten(1).float().mean(1, keepdim=True)
    x = [kind, area * 4.0, gf, rstats]
    argmax_truth, aimed, target = [], [], []
    for row in ds.rows:
        t = truth[row["sample_id"]]
        tm = [maskcodec.decode(g["mask"]) for g in t["regions"]]
        for g in row["regions"]:
            m = maskcodec.decode(g["mask"])
            iou = [(m & x_).sum() / max(1, (m | x_).sum()) for x_ in tm]
            tg = t["regions"][int(np.argmax(iou))]
            target.append(float(max(iou) >= 0.3 and any(c["type"] == "edit" for c in tg["changes"])))
            argmax_truth.append(list(_matched_truth(g, t, tm)))
            mt = _match(m, t["regions"], tm)
            aimed.append([(mt.get("success") if mt.get("success") is not None else 25.0) / 25, mt["preserve"] / 25])
    aimed_t, target_t = torch.tensor(aimed, dtype=torch.float32), torch.tensor(target)[:, None]
    extra = {"none": [], "all": [aimed_t], "success": [aimed_t[:, :1]], "preserve": [aimed_t[:, 1:]],
             "target": [target_t], "edit": [target_t, target_t * aimed_t[:, :1]]}[oracle]
    x += extra
    return {"x": torch.cat(x, 1).float(), "b": b, "truth": np.array(argmax_truth, float)}


def train_head(d: dict, seed: int, steps: int, tc: dict, hidden: int, dropout: float) -> torch.nn.Module:
    """The region head (as SFRewardModel builds it) trained with the trainer's region losses."""
    torch.manual_seed(seed)
    x, b = d["x"], d["b"]
    net = _mlp(x.shape[1], hidden, 5, dropout)
    opt = torch.optim.AdamW(net.parameters(), lr=tc["lr"], weight_decay=0.01)
    warm = tc.get("warmup_steps", 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.1 + 0.45 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    n, bs = b["sources"].shape[0], tc["batch_size"]
    regions = [torch.nonzero(b["region_image"] == i).flatten() for i in range(n)]
    gen = torch.Generator().manual_seed(seed)
    perm: list[int] = []
    for step in range(steps):
        pos = step % (n // bs)
        if pos == 0:
            perm = torch.randperm(n, generator=gen).tolist()
        idx = perm[pos * bs:(pos + 1) * bs]
        r = torch.cat([regions[i] for i in idx])
        rimg = torch.cat([torch.full((len(regions[i]),), j) for j, i in enumerate(idx)])
        out, tg = net(x[r]), b["targets"][r]
        s_mu, p_mu = torch.sigmoid(out[:, 0]), torch.sigmoid(out[:, 2])
        w = losses.bad_region_weight(tg, tc["bad_weight"])
        a, an = losses.gaussian_nll_sum(s_mu, out[:, 1].clamp(LOGVAR_MIN, LOGVAR_MAX), tg[:, 0], 0.5, w)
        c, cn = losses.gaussian_nll_sum(p_mu, out[:, 3].clamp(LOGVAR_MIN, LOGVAR_MAX), tg[:, 1], 0.5, w)
        rs, rn, _ = losses.pairwise_rank(torch.stack([s_mu, p_mu], 1), tg, b["region_key"][r], rimg, 2.5, 10.0)
        ls, ln, _ = losses.localization_rank(s_mu, p_mu, tg, rimg, 2.5, 10.0)
        loss = ((a + c) / (an + cn).clamp_min(1) + tc["rank_weight"] * rs / rn.clamp_min(1)
                + tc["loc_rank_weight"] * ls / ln.clamp_min(1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
    return net.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("ground_truth")
    ap.add_argument("--oracle", choices=ORACLES, default="none", help="append what the annotators aim at to the features")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--features-version", type=int, default=None, help="instead of the demo preset's")
    args = ap.parse_args()
    torch.set_num_threads(1)
    preset = PRESETS["demo"]
    over = {} if args.features_version is None else {"features_version": args.features_version}
    model = SFRewardModel(SFRewardConfig(**{**preset.model, **over})).eval()
    truth = read_ground_truth(args.ground_truth)
    tr = split_inputs(model, args.dataset, "train", truth, args.oracle)
    te = split_inputs(model, args.dataset, "test", truth, args.oracle)
    for seed in (int(s) for s in args.seeds.split(",")):
        net = train_head(tr, seed, preset.train["max_steps"], preset.train, model.config.hidden, model.config.dropout)
        with torch.no_grad():
            o = net(te["x"])
        pred = torch.stack([torch.sigmoid(o[:, 0]), torch.sigmoid(o[:, 2])], 1).numpy() * 25
        res = {"dataset": args.dataset.rstrip("/").split("/")[-1], "oracle": args.oracle,
               "features_version": model.config.features_version, "seed": seed}
        for name, target in (("labels", te["b"]["targets"].numpy()), ("truth", te["truth"])):
            m = region_metrics(pred[:, 0], pred[:, 1], target, te["b"]["region_sample"].numpy())
            res[name] = {"srcc": round(m["region_srcc_mean"], 3), "auroc": round(m["localization_auroc"], 3),
                         "n": m["n_localization"]}
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
